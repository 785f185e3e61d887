"""Training on Lightning: one LightningModule per method."""

from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped

__all__ = ["BACKBONES", "ActionClassifier", "MotionVectorTransfer", "build_backbone", "tapped"]

# Lu et al.'s Dual-action Stream (3D CNNs on clips; registers the "resnet3d" backbone).
from .dual_action import ClipClassifier, DualActionFusion, DualActionStream  # noqa: E402

__all__ += ["ClipClassifier", "DualActionFusion", "DualActionStream"]
