"""2D ResNets (He et al.) with torchvision's module names, so its weight files load as they are.

The stages ``conv1``/``bn1``/``layer1``...``layer4``/``fc`` match torchvision's, so a
``resnet50-*.pth`` saved from torchvision loads with :func:`load_weights` (torchvision itself is
not needed, and nothing is downloaded). ``in_channels`` other than 3 use TSN's cross-modality
initialisation when such weights are loaded.
"""

from __future__ import annotations

from torch import Tensor, nn

from .common import residual_stages, set_in_channels


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 bottleneck with a shortcut (ResNet-50/101/152; stride on the 3x3)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    """ResNet for ``(N, in_channels, H, W)`` inputs -> ``(N, num_classes)``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        num_classes: outputs of ``fc`` (0: no classifier, :meth:`forward` returns features).
        in_channels: input channels (3 RGB, 2 for one MV field, 2K stacked).
        dropout: before ``fc`` (TSN uses 0.8 on flow).

    ``layer1``...``layer4`` have strides 4, 8, 16, 32: at 224 input 56, 28, 14, 7.
    """

    #: the RGB input convention of the weights (:data:`mvaccel.data.transforms.RGB_NORMS`).
    input_norm = "imagenet"

    def __init__(self, block, layers, num_classes=1000, in_channels=3, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = residual_stages(block, layers, nn.Conv2d, nn.BatchNorm2d)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        set_in_channels(self, in_channels)

    def features(self, x: Tensor) -> Tensor:
        """The pooled ``(N, num_features)`` features before the classifier."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)`` (features if built with ``num_classes=0``)."""
        return self.fc(self.dropout(self.features(x)))


def resnet18(**kw) -> ResNet:
    """ResNet-18 (CoViAR's MV and residual streams; DMC-Net's classifier)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


def resnet50(**kw) -> ResNet:
    """ResNet-50."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)


def resnet152(**kw) -> ResNet:
    """ResNet-152 (CoViAR's I-frame stream)."""
    return ResNet(Bottleneck, (3, 8, 36, 3), **kw)
