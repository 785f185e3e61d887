"""BN-Inception (Ioffe & Szegedy, 2015), the backbone of TSN and of the OFF networks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import set_in_channels


def _cbr(cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Inception(nn.Module):
    """One BN-Inception block: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool(-1x1), concatenated.

    Args:
        cin: input channels.
        c1: 1x1 branch (0: none, as in the stride-2 blocks 3c and 4e).
        c3r, c3: 3x3 branch reduce / out.
        cd3r, cd3: double-3x3 branch reduce / out.
        pool: ``"avg"`` or ``"max"``.
        proj: 1x1 after the pool (0: pass-through, as in 3c and 4e).
        stride: 2 for the grid-reducing blocks.
    """

    def __init__(self, cin, c1, c3r, c3, cd3r, cd3, pool, proj, stride=1):
        super().__init__()
        self.b1 = _cbr(cin, c1, 1) if c1 else None
        self.b3 = nn.Sequential(_cbr(cin, c3r, 1), _cbr(c3r, c3, 3, stride, 1))
        self.bd3 = nn.Sequential(
            _cbr(cin, cd3r, 1), _cbr(cd3r, cd3, 3, 1, 1), _cbr(cd3, cd3, 3, stride, 1)
        )
        pad = 1 if stride == 1 else 0  # the stride-2 pools of Caffe's model have no padding
        p = (nn.AvgPool2d if pool == "avg" else nn.MaxPool2d)(3, stride, pad, ceil_mode=True)
        self.pool = nn.Sequential(p, _cbr(cin, proj, 1)) if proj else p
        self.out_channels = c1 + c3 + cd3 + (proj or cin)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        outs = [self.b1(x)] if self.b1 is not None else []
        outs += [self.b3(x), self.bd3(x), self.pool(x)]
        return torch.cat(outs, 1)


# name: (c1, c3r, c3, cd3r, cd3, pool, proj, stride), from the paper's Figure 5 table.
BLOCKS = {
    "inception_3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "inception_3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "inception_3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "inception_4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "inception_4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "inception_4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "inception_4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "inception_4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "inception_5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "inception_5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


def layer_names() -> dict[str, str]:
    """BN-Inception's Caffe layer names -> this module's paths (each conv and its ``_bn``).

    The names of the Caffe model TSN released, kept by every PyTorch port: tsn-pytorch's
    ``tf_model_zoo/bninception`` (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``,
    ``inception_3a_double_3x3_2_bn``, ``inception_3a_pool_proj`` ...), Cadene's
    ``pretrainedmodels`` and mmaction's / mmaction2's ``BNInception`` backbone.
    """
    units = {"conv1_7x7_s2": "conv1", "conv2_3x3_reduce": "conv2.0", "conv2_3x3": "conv2.1"}
    for block, (c1, *_, proj, _) in BLOCKS.items():
        parts = {
            "3x3_reduce": "b3.0",
            "3x3": "b3.1",
            "double_3x3_reduce": "bd3.0",
            "double_3x3_1": "bd3.1",
            "double_3x3_2": "bd3.2",
        }
        if c1:
            parts["1x1"] = "b1"
        if proj:
            parts["pool_proj"] = "pool.1"
        units.update({f"{block}_{caffe}": f"{block}.{ours}" for caffe, ours in parts.items()})
    names = {}
    for caffe, unit in units.items():  # a _cbr unit: .0 the conv, .1 its BatchNorm
        names[caffe] = f"{unit}.0"
        names[f"{caffe}_bn"] = f"{unit}.1"
    return names


class BNInception(nn.Module):
    """BN-Inception: ``(N, in_channels, 224, 224)`` -> ``(N, num_classes)``.

    Inception blocks are the submodules ``inception_3a`` ... ``inception_5b`` (the names of the
    OFF papers' taps: 3a-3b at 28x28 with 256/320 channels, 3c-4e at 14x14, 5a-5b at 7x7 with
    1024 channels).

    Args:
        num_classes: classifier outputs (0: none, :meth:`forward` returns pooled features).
        in_channels: input channels (cross-modality initialisation on weight loading).
        dropout: before the classifier (TSN: 0.8 RGB, 0.7 flow).
    """

    #: the RGB input convention of the weights (:data:`mvaccel.data.transforms.RGB_NORMS`);
    #: TSN's Caffe-trained weights set ``"caffe_bgr"`` when loaded.
    input_norm = "imagenet"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.conv1 = _cbr(3, 64, 7, 2, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Sequential(_cbr(64, 64, 1), _cbr(64, 192, 3, 1, 1))
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin = 192
        for name, cfg in BLOCKS.items():
            block = Inception(cin, *cfg)
            setattr(self, name, block)
            cin = block.out_channels
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        set_in_channels(self, in_channels)

    def features(self, x: Tensor) -> Tensor:
        """Pooled ``(N, 1024)`` features."""
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        for name in BLOCKS:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(N, num_classes)``."""
        return self.fc(self.dropout(self.features(x)))
