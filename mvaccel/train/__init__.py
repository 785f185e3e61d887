"""Training on Lightning: one LightningModule per method."""

from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped

__all__ = ["BACKBONES", "ActionClassifier", "MotionVectorTransfer", "build_backbone", "tapped"]

from .tvnet import TVNetClassifier, TVNetPipeline  # noqa: E402

__all__ += ["TVNetClassifier", "TVNetPipeline"]
