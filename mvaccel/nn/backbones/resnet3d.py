"""3D ResNets (Hara et al.), the clip networks of MARS and the Dual-action Stream."""

from __future__ import annotations

from torch import Tensor, nn

from .common import residual_stages, set_in_channels


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a shortcut."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck3d(nn.Module):
    """1x1x1 - 3x3x3 - 1x1x1 bottleneck with a shortcut."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet3d(nn.Module):
    """3D ResNet for clips ``(N, in_channels, T, H, W)`` -> ``(N, num_classes)``.

    Module names follow Hara et al.'s 3D-ResNets-PyTorch (``conv1``, ``bn1``, ``layer1``...
    ``layer4``, ``fc``; shortcut type B), so their Kinetics checkpoints load with
    :func:`load_weights`. The stem is 7x7x7 with stride (1, 2, 2) and a 3x3x3/2 max pool;
    ``layer2``...``layer4`` halve time and space. The outputs of ``layer1``...``layer4`` are the
    levels the Dual-action Stream matches between student and teacher.

    Args:
        block: :class:`BasicBlock3d` or :class:`Bottleneck3d`.
        layers: blocks per stage.
        num_classes: outputs (0: features only).
        in_channels: 3 for RGB clips, 2 for flow clips.
        width: multiplier of the channel counts (0.125: 8 ... 64 planes; tiny demo nets).
        stage_planes: planes of ``layer1`` (default: the stem's ``64 * width``; ResNeXt uses
            ``128 * width`` after a 64-channel stem, :mod:`.resnext3d`).
    """

    #: the RGB input convention of the weights (see :data:`mvaccel.data.transforms.RGB_NORMS`);
    #: :func:`~mvaccel.nn.backbones.load_weights` sets it from the weight file's scheme.
    input_norm = "imagenet"

    def __init__(
        self,
        block,
        layers,
        num_classes=400,
        in_channels=3,
        width: float = 1.0,
        stage_planes: int | None = None,
    ):
        super().__init__()
        if not width > 0:
            raise ValueError(f"resnet3d: width must be > 0, got {width}")
        base = max(1, round(64 * width))
        planes = base if stage_planes is None else stage_planes
        self.conv1 = nn.Conv3d(3, base, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        stages = residual_stages(block, layers, nn.Conv3d, nn.BatchNorm3d, planes, base)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = 8 * planes * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        set_in_channels(self, in_channels)

    def features(self, x: Tensor) -> Tensor:
        """Pooled ``(N, num_features)`` features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)``."""
        return self.fc(self.features(x))


def resnet3d18(**kw) -> ResNet3d:
    """3D ResNet-18."""
    return ResNet3d(BasicBlock3d, (2, 2, 2, 2), **kw)


def resnet3d50(**kw) -> ResNet3d:
    """3D ResNet-50."""
    return ResNet3d(Bottleneck3d, (3, 4, 6, 3), **kw)


def resnet3d101(**kw) -> ResNet3d:
    """3D ResNet-101 (the Dual-action Stream's network)."""
    return ResNet3d(Bottleneck3d, (3, 4, 23, 3), **kw)


_DEPTHS = {
    10: (BasicBlock3d, (1, 1, 1, 1)),
    18: (BasicBlock3d, (2, 2, 2, 2)),
    34: (BasicBlock3d, (3, 4, 6, 3)),
    50: (Bottleneck3d, (3, 4, 6, 3)),
    101: (Bottleneck3d, (3, 4, 23, 3)),
    152: (Bottleneck3d, (3, 8, 36, 3)),
}


def resnet3d(depth: int = 18, width: float = 1.0, **kw) -> ResNet3d:
    """A 3D ResNet of ``depth`` (10, 18, 34, 50, 101, 152) at ``width`` times the channels."""
    if depth not in _DEPTHS:
        raise ValueError(f"resnet3d: depth must be one of {sorted(_DEPTHS)}, got {depth}")
    block, layers = _DEPTHS[depth]
    return ResNet3d(block, layers, width=width, **kw)
