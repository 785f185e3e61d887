"""Network modules: motion layers (OFF, TVNet) on mvaccel's fused ops, and the papers' backbones.

Every module takes and returns plain tensors with documented shapes, so it drops into any
network; backbones are parameters (:class:`FeatureTaps` pulls intermediate maps out of any
torch model, :mod:`mvaccel.nn.backbones` has the papers' networks).
"""

from . import backbones
from .common import BN_INCEPTION_TAPS, RESNET_TAPS, FeatureTaps, SegmentConsensus
from .dmcnet import DMCDiscriminator, DMCGenerator, DMCNetwork
from .fusion import AttentionFusion
from .off import (
    AuthorsOFFUnit,
    Bottleneck,
    OFFLayer,
    OFFSubNetwork,
    OFFUnit,
    RawOFF,
    ResidualBlock,
    TapOFFLayer,
)
from .tvnet import TVNet

__all__ = [
    "AttentionFusion",
    "AuthorsOFFUnit",
    "BN_INCEPTION_TAPS",
    "Bottleneck",
    "DMCDiscriminator",
    "DMCGenerator",
    "DMCNetwork",
    "RESNET_TAPS",
    "FeatureTaps",
    "OFFLayer",
    "OFFSubNetwork",
    "OFFUnit",
    "RawOFF",
    "ResidualBlock",
    "SegmentConsensus",
    "TapOFFLayer",
    "TVNet",
    "backbones",
]
