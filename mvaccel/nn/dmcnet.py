"""DMC-Net's networks (Shou et al., CVPR 2019): the DMC generator, the discriminator, and helpers.

The generator refines a frame's motion vectors with its residual into a *discriminative motion
cue* (DMC) that a flow classifier can read; it is trained to resemble TV-L1 flow (MSE, and an
adversarial loss against :class:`DMCDiscriminator`) jointly with the classifier. The layer
sizes are the authors' ``EstimatorDenseNetTiny`` and ``Discriminator3`` (``facebookresearch/
dmc-net``, ``code/dmcnet_GAN/model.py``, the networks its HMDB51 / UCF101 scripts train).

Units: MV, flow and DMC are in the same normalised units (the data module's
:func:`mvaccel.data.transforms.normalize_motion` with one ``bound`` and ``motion_std`` for MV and
flow: the authors' ``(v * 127.5 / 20 + 128) / 255 - 0.5) / 0.226``), so that ``MV + G(MV, R)`` is
compared with the flow directly. Residuals as the data module normalises them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import block_upsample

GROWTH = (8, 8, 6, 4, 2)


class DMCGenerator(nn.Module):
    """The DMC generator: five densely connected 3x3 convolutions and a 3x3 prediction to 2.

    Input: the motion vectors (2 channels) and residual (3) of a frame stacked (5 channels).
    Each of ``conv_0`` ... ``conv_4`` (8, 8, 6, 4, 2 filters, LeakyReLU 0.1) sees the input and
    every earlier output (DenseNet's concatenation, newest first as the authors' code);
    ``predict_flow`` maps all of them to 2 channels, which are *added to the MV* (the paper's
    shortcut: the generator predicts a refinement). 0.23 GFLOPs at 224x224 in the paper.

    Args:
        mv_channels: channels of the motion input (2).
        residual_channels: channels of the residual input (3).
        growth: filters of the five densely connected convolutions.
        negative_slope: of the LeakyReLUs (0.1).
    """

    def __init__(
        self,
        mv_channels: int = 2,
        residual_channels: int = 3,
        growth: Sequence[int] = GROWTH,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        self.mv_channels, self.residual_channels = mv_channels, residual_channels
        c = mv_channels + residual_channels
        self.convs = nn.ModuleList()
        for g in growth:
            self.convs.append(nn.Sequential(nn.Conv2d(c, g, 3, 1, 1), nn.LeakyReLU(negative_slope)))
            c += g
        self.predict_flow = nn.Conv2d(c, mv_channels, 3, 1, 1)

    def refinement(self, mv: Tensor, residual: Tensor) -> Tensor:
        """``G(MV, R)``: what the generator adds to the MV, ``(N, 2, H, W)``."""
        if mv.dim() != 4 or residual.dim() != 4 or mv.shape[-2:] != residual.shape[-2:]:
            raise ValueError(
                f"DMCGenerator: mv (N, {self.mv_channels}, H, W) and residual "
                f"(N, {self.residual_channels}, H, W) of one size, got {tuple(mv.shape)} and "
                f"{tuple(residual.shape)}"
            )
        if mv.shape[1] != self.mv_channels or residual.shape[1] != self.residual_channels:
            raise ValueError(
                f"DMCGenerator: expected {self.mv_channels} MV and {self.residual_channels} "
                f"residual channels, got {mv.shape[1]} and {residual.shape[1]}"
            )
        x = torch.cat((mv, residual), 1)
        for conv in self.convs:
            x = torch.cat((conv(x), x), 1)
        return self.predict_flow(x)

    def forward(self, mv: Tensor, residual: Tensor) -> Tensor:
        """DMC ``(N, 2, H, W)`` = ``mv + G(mv, residual)`` (same units as ``mv``)."""
        return mv + self.refinement(mv, residual)


def _disc_block(cin: int, cout: int, stride: int, bn: bool, dropout: float, eps: float):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True)]
    layers.append(nn.Dropout2d(dropout))
    if bn:
        # PyTorch-GAN's BatchNorm2d(c, 0.8), whose 0.8 is the eps: kept as the authors ran it.
        layers.append(nn.BatchNorm2d(cout, eps=eps))
    return nn.Sequential(*layers)


class DMCDiscriminator(nn.Module):
    """DMC-Net's discriminator: flow (real) vs DMC (fake), two logits.

    Four stages of a stride-2 block (3x3 conv, LeakyReLU 0.2, Dropout2d 0.25, BatchNorm, none in
    the first) with 16, 32, 64, 128 channels, each followed by ``extra_blocks`` stride-1 blocks
    of the same width (the authors' ``Discriminator`` has 0, ``Discriminator3`` 2: the one their
    training scripts use), then a linear layer from the ``128 x 14 x 14`` map to 2 (224x224
    input; other sizes are average-pooled to 14x14 first, an identity at 224).

    Args:
        in_channels: 2 (a flow / DMC field).
        channels: the four stages' widths.
        extra_blocks: stride-1 blocks after each stride-2 block.
        dropout: Dropout2d probability.
        bn_eps: the BatchNorms' eps (0.8 in the authors' code).
        grid: side of the map the linear layer reads (14).
    """

    def __init__(
        self,
        in_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        extra_blocks: int = 2,
        dropout: float = 0.25,
        bn_eps: float = 0.8,
        grid: int = 14,
    ):
        super().__init__()
        blocks, c = [], in_channels
        for i, w in enumerate(channels):
            blocks.append(_disc_block(c, w, 2, i > 0, dropout, bn_eps))
            blocks += [_disc_block(w, w, 1, True, dropout, bn_eps) for _ in range(extra_blocks)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.grid = grid
        self.adv_layer = nn.Linear(c * grid * grid, 2)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2, H, W)`` -> ``(N, 2)`` logits (class 1 = real flow, 0 = fake DMC)."""
        if x.dim() != 4:
            raise ValueError(f"DMCDiscriminator: expected (N, C, H, W), got {tuple(x.shape)}")
        x = self.blocks(x)
        if tuple(x.shape[-2:]) != (self.grid, self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.adv_layer(x.flatten(1))


def _cell_means(x: Tensor, block: int) -> Tensor:
    """``(N, C, ceil(H / b), ceil(W / b))`` means over the pixels of each ``b x b`` cell."""
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    ph, pw = -h % block, -w % block
    ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
    s = F.avg_pool2d(F.pad(x, (0, pw, 0, ph)), block, divisor_override=1)
    n = F.avg_pool2d(F.pad(ones, (0, pw, 0, ph)), block, divisor_override=1)
    return (s / n).contiguous()


def block_average(x: Tensor, block: int) -> Tensor:
    """Average ``(N, C, H, W)`` over ``block x block`` cells and spread it back (nearest).

    DMC-Net's stage-1 target: the flow made blocky like a macroblock's motion vector (the
    authors' ``block_reduce(..., np.mean)`` then ``repeat``). Partial cells at the right and
    bottom edges average the pixels they hold (``block_reduce`` pads them with zeros instead).
    """
    if block <= 1:
        return x
    return block_upsample(_cell_means(x, block), block, tuple(x.shape[-2:]), "nearest")


def smooth_mv(mv: Tensor, block: int = 16) -> Tensor:
    """DMC-Net's bilinear-smoothed MV (supplementary 7.8): block means, then bilinear back.

    ``(N, 2, H, W)`` motion averaged over ``block x block`` cells (224 -> 14 at 16) and
    interpolated between the cell centres back to ``H x W`` (:func:`mvaccel.ops.block_upsample`,
    ``"bilinear"``): the blocky codec field made smooth like TV-L1 flow.
    """
    if block <= 1:
        return mv
    return block_upsample(_cell_means(mv, block), block, tuple(mv.shape[-2:]), "bilinear")


def class_activation_map(
    net: nn.Module, x: Tensor, labels: Tensor, upscale: float = 2.0, relu: bool = True
) -> Tensor:
    """CAM attention of a ResNet flow classifier for the true class, ``(N, 1, H, W)`` >= 0.

    Zhou et al.'s class activation map as DMC-Net's supplementary (7.4) uses it to weight the
    flow reconstruction loss: the input is resized ``upscale`` times (224 -> 448 gives a 14x14
    map), the classifier's ``fc`` weights of class ``labels`` are applied at every position of
    ``layer4``'s output, negative values are set to 0 (ReLU) and the map is resized back to
    ``H x W`` bilinearly. Flow x and y share the weight.

    Args:
        net: a :class:`mvaccel.nn.backbones.ResNet` (``layer4`` and ``fc``).
        x: ``(N, C, H, W)`` its input (the flow).
        labels: ``(N,)`` class indices.
        upscale: input magnification before the classifier.
        relu: set negative values to 0 (the paper's choice).
    """
    if not all(hasattr(net, a) for a in ("layer4", "fc", "conv1")):
        raise ValueError(f"class_activation_map needs a ResNet (layer4, fc), got {type(net)}")
    h, w = x.shape[-2:]
    big = x
    if upscale != 1:
        size = (round(h * upscale), round(w * upscale))
        big = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    f = net.maxpool(net.relu(net.bn1(net.conv1(big))))
    f = net.layer4(net.layer3(net.layer2(net.layer1(f))))
    weight = net.fc.weight[labels]  # (N, C)
    cam = torch.einsum("nc,nchw->nhw", weight, f)[:, None]
    if relu:
        cam = F.relu(cam)
    return F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)


class DMCNetwork(nn.Module):
    """DMC-Net at test time: generator then classifier, reading only the compressed domain.

    ``forward(mv, residual)`` with ``(N, 2, H, W)`` motion vectors and ``(N, 3, H, W)``
    residuals returns ``(N, K)`` scores; :meth:`dmc` gives the generated field.

    Args:
        generator: a :class:`DMCGenerator`.
        classifier: any network of a 2-channel field (ResNet-18 in the paper).
        smooth_block: 0 (the blocky MV, the paper's main setting) or the cell size of
            :func:`smooth_mv` (16: the bilinear-smoothed ablation).
    """

    def __init__(self, generator: DMCGenerator, classifier: nn.Module, smooth_block: int = 0):
        super().__init__()
        self.generator, self.classifier = generator, classifier
        self.smooth_block = smooth_block

    def dmc(self, mv: Tensor, residual: Tensor) -> Tensor:
        """The DMC ``(N, 2, H, W)``."""
        if self.smooth_block:
            mv = smooth_mv(mv, self.smooth_block)
        return self.generator(mv, residual)

    def forward(self, mv: Tensor, residual: Tensor) -> Tensor:
        """Scores ``(N, K)``."""
        return self.classifier(self.dmc(mv, residual))
