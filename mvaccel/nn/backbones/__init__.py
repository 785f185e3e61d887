"""Backbones of the papers, any input channel count, weights from local files only.

Pre-trained weights are never downloaded at run time: save them once where you have internet
(e.g. torchvision's ``resnet50(weights=...).state_dict()`` with ``torch.save``, or the TSN /
3D-ResNets checkpoints) and load the file with :func:`load_weights`, which adapts a first layer
to another input channel count by TSN's cross-modality initialisation.
"""

from .bninception import BNInception
from .clarifai import ClarifaiNet
from .common import cross_modality_weight, load_weights, set_in_channels
from .resnet import ResNet, resnet18, resnet50, resnet152
from .resnet3d import ResNet3d, resnet3d, resnet3d18, resnet3d50, resnet3d101

__all__ = [
    "BNInception",
    "ClarifaiNet",
    "ResNet",
    "ResNet3d",
    "cross_modality_weight",
    "load_weights",
    "resnet18",
    "resnet3d",
    "resnet3d18",
    "resnet3d50",
    "resnet3d101",
    "resnet50",
    "resnet152",
    "set_in_channels",
]
