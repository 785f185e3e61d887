"""Backbones of the papers, any input channel count, weights from local files only.

Pre-trained weights are never downloaded at run time: save them once where you have internet
(e.g. torchvision's ``resnet50(weights=...).state_dict()`` with ``torch.save``, tsn-pytorch's or
mmaction2's BN-Inception, MARS's ResNeXt-101 checkpoints, a Caffe ``.caffemodel``) and load the
file with :func:`load_weights`, which recognises the naming scheme (:mod:`.weights`), adapts a
first layer to another input channel count by TSN's cross-modality initialisation, reports what
matched per layer and sets the backbone's RGB ``input_norm``.
"""

from .bninception import BNInception
from .clarifai import ClarifaiNet
from .common import cross_modality_weight, set_in_channels
from .resnet import ResNet, resnet18, resnet50, resnet152
from .resnet3d import ResNet3d, resnet3d, resnet3d18, resnet3d50, resnet3d101
from .resnext3d import resnext3d, resnext3d101
from .weights import SCHEMES, convert_state_dict, load_weights, read_caffemodel, read_state

__all__ = [
    "BNInception",
    "ClarifaiNet",
    "ResNet",
    "ResNet3d",
    "SCHEMES",
    "convert_state_dict",
    "cross_modality_weight",
    "load_weights",
    "read_caffemodel",
    "read_state",
    "resnet18",
    "resnet3d",
    "resnet3d18",
    "resnet3d50",
    "resnet3d101",
    "resnet50",
    "resnet152",
    "resnext3d",
    "resnext3d101",
    "set_in_channels",
]
