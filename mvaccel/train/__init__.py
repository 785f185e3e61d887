"""Training on Lightning: one LightningModule per method."""

from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped
from .off import OFFNetwork

__all__ = [
    "BACKBONES",
    "ActionClassifier",
    "MotionVectorTransfer",
    "OFFNetwork",
    "build_backbone",
    "tapped",
]
