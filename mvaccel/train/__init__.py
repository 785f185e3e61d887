"""Training on Lightning: one LightningModule per method."""

from .coviar import CoViARStream
from .dmcnet import DMCNet
from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped

__all__ = [
    "BACKBONES",
    "ActionClassifier",
    "CoViARStream",
    "DMCNet",
    "MotionVectorTransfer",
    "build_backbone",
    "tapped",
]
