"""Training on Lightning: one LightningModule per method."""

from .coviar import CoViARStream
from .dmcnet import DMCNet
from .dual_action import ClipClassifier, DualActionFusion, DualActionStream
from .modules import BACKBONES, ActionClassifier, MotionVectorTransfer, build_backbone, tapped
from .off import OFFNetwork
from .tvnet import TVNetClassifier, TVNetPipeline

__all__ = [
    "BACKBONES",
    "ActionClassifier",
    "ClipClassifier",
    "CoViARStream",
    "DMCNet",
    "DualActionFusion",
    "DualActionStream",
    "MotionVectorTransfer",
    "OFFNetwork",
    "TVNetClassifier",
    "TVNetPipeline",
    "build_backbone",
    "tapped",
]
