"""ClarifaiNet (CNN-M-2048), the network of two-stream CNNs and of Zhang et al.'s MV-CNN."""

from __future__ import annotations

from torch import Tensor, nn


class ClarifaiNet(nn.Module):
    """ClarifaiNet as in the two-stream / DTMV-CNN Caffe prototxts, 224x224 input.

    conv1 96 7x7/2 -> act -> LRN -> max 3x3/2; conv2 256 5x5/2 -> act -> LRN -> max 3x3/2;
    conv3, conv4, conv5 512 3x3 -> act (max 3x3/2 after conv5); fc6 4096, fc7 2048 (each act
    + dropout), fc8 ``num_classes``. Pooling rounds up as Caffe's does (6x6 after pool5).

    Args:
        num_classes: fc8's outputs.
        in_channels: 3 for RGB, ``2K`` for ``K`` stacked motion-vector or flow fields (the
            papers use K = 10: 20 channels).
        prelu: PReLU activations (Zhang et al.'s temporal net) instead of ReLU (spatial net).
        dropout: ``(fc6, fc7)`` dropout ratios; temporal net (0.9, 0.8), spatial (0.5, 0.5).
        width: multiplier of every layer's width (1: the paper's 96-256-512-512-512 convs and
            4096-2048 fc; smaller for quick experiments such as ``make demo``).

    Modules ``conv1`` ... ``conv5``, ``fc6``, ``fc7``, ``fc8`` are the stages that Deeply
    Connected Transfer connects (their outputs after the activation: see :attr:`stages`).
    """

    #: the RGB input convention of the weights (:data:`mvaccel.data.transforms.RGB_NORMS`).
    input_norm = "imagenet"

    stages = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

    def __init__(
        self,
        num_classes: int = 101,
        in_channels: int = 20,
        prelu: bool = True,
        dropout: tuple[float, float] = (0.9, 0.8),
        width: float = 1.0,
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"ClarifaiNet: width must be > 0, got {width}")
        c1, c2, c3, f6, f7 = (max(1, round(c * width)) for c in (96, 256, 512, 4096, 2048))

        def act(c: int) -> nn.Module:
            return nn.PReLU(c) if prelu else nn.ReLU(inplace=True)

        def lrn() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2, ceil_mode=True)

        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c1, 7, 2), act(c1), lrn(), pool())
        self.conv2 = nn.Sequential(nn.Conv2d(c1, c2, 5, 2, 1), act(c2), lrn(), pool())
        self.conv3 = nn.Sequential(nn.Conv2d(c2, c3, 3, 1, 1), act(c3))
        self.conv4 = nn.Sequential(nn.Conv2d(c3, c3, 3, 1, 1), act(c3))
        self.conv5 = nn.Sequential(nn.Conv2d(c3, c3, 3, 1, 1), act(c3), pool())
        self.pool = nn.AdaptiveMaxPool2d((6, 6))  # identity at 224x224; other sizes still fit
        self.fc6 = nn.Sequential(nn.Linear(c3 * 36, f6), act(f6), nn.Dropout(dropout[0]))
        self.fc7 = nn.Sequential(nn.Linear(f6, f7), act(f7), nn.Dropout(dropout[1]))
        self.fc8 = nn.Linear(f7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, num_classes)`` scores."""
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        x = self.pool(x).flatten(1)
        return self.fc8(self.fc7(self.fc6(x)))
