"""ResNeXt-101 3D (Xie et al.'s ResNeXt in Hara et al.'s 3D form), MARS's network.

The Dual-action Stream's teacher is MARS's Kinetics flow model, a 3D ResNeXt-101 with
cardinality 32 and type-B shortcuts. Module names are MARS's and Hara et al.'s ``resnext.py``
(``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.2.bn3``, ``downsample.0/1``, ``fc``), so
their checkpoints (``{"arch", "state_dict": {"module.conv1.weight", ...}}``) load with
:func:`~mvaccel.nn.backbones.load_weights` as they are.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from .resnet3d import Bottleneck3d, ResNet3d


class ResNeXtBottleneck3d(Bottleneck3d):
    """1x1x1 - grouped 3x3x3 - 1x1x1 bottleneck with a shortcut; ``2 * planes`` outputs.

    Args:
        inplanes: input channels.
        planes: the stage's planes (128, 256, 512, 1024 in ResNeXt-101); the grouped
            convolution has ``cardinality * (planes // 32)`` channels (MARS's ``mid_planes``).
        stride: of the 3x3x3 convolution (time and space).
        downsample: the shortcut's projection (type B: 1x1x1 conv + BN) or None.
        cardinality: groups of the 3x3x3 convolution (32).
    """

    expansion = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, cardinality: int = 32):
        nn.Module.__init__(self)  # the layers differ from ResNet's; forward is Bottleneck3d's
        mid = cardinality * (planes // 32)
        if mid < 1:
            raise ValueError(
                f"ResNeXt: planes // 32 must be >= 1 (planes {planes}, cardinality {cardinality})"
            )
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample


def resnext3d(depth: int = 101, cardinality: int = 32, width: float = 1.0, **kw) -> ResNet3d:
    """A 3D ResNeXt of ``depth`` (50, 101, 152): stem 64, stages 128 ... 1024 planes, 2x out.

    ``(N, in_channels, T, H, W)`` -> ``(N, num_classes)``; ``layer1`` ... ``layer4`` output
    256, 512, 1024, 2048 channels (times ``width``), the levels the Dual-action Stream matches.

    Args:
        depth: 50 (3, 4, 6, 3 blocks), 101 (3, 4, 23, 3) or 152 (3, 8, 36, 3).
        cardinality: groups of the 3x3x3 convolutions (MARS: 32).
        width: multiplier of the channels (tests and demos; ``128 * width`` must be >= 32).
        **kw: :class:`~mvaccel.nn.backbones.ResNet3d`'s ``num_classes``, ``in_channels``.
    """
    layers = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    if depth not in layers:
        raise ValueError(f"resnext3d: depth must be one of {sorted(layers)}, got {depth}")
    if not width > 0:
        raise ValueError(f"resnext3d: width must be > 0, got {width}")
    block = partial(ResNeXtBottleneck3d, cardinality=cardinality)
    block.expansion = ResNeXtBottleneck3d.expansion
    return ResNet3d(block, layers[depth], width=width, stage_planes=round(128 * width), **kw)


def resnext3d101(**kw) -> ResNet3d:
    """3D ResNeXt-101, cardinality 32 (MARS; the Dual-action Stream's teacher and student)."""
    return resnext3d(101, **kw)
