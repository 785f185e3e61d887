"""Training on Lightning: one LightningModule per method."""

from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped

__all__ = ["BACKBONES", "ActionClassifier", "MotionVectorTransfer", "build_backbone", "tapped"]
