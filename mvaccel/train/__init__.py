"""Training on Lightning: one LightningModule per method."""

from .coviar import CoViARStream
from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped

__all__ = [
    "BACKBONES",
    "ActionClassifier",
    "CoViARStream",
    "MotionVectorTransfer",
    "build_backbone",
    "tapped",
]
