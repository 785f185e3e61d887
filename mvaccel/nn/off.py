"""Optical Flow guided Feature networks (Sun et al., CVPR 2018) on the fused ``off_gradients``.

Layout: a backbone runs on every segment's frame, ``(N * T, 3, H, W)``; its tapped features are
viewed as ``(N, T, C, h, w)`` stacks, and OFF is taken between consecutive segments (``T - 1``
pairs per video). Pairs are folded into the batch for the residual blocks and classifiers; the
classifier scores of the pairs are averaged (TSN consensus) into one score per video.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.off import off_gradients, off_gradients_stack, sobel_weight
from .common import SegmentConsensus


def _as_stack(f: Tensor, name: str) -> Tensor:
    if f.dim() != 5 or f.shape[1] < 2:
        raise ValueError(f"{name}: expected a (N, T >= 2, C, H, W) stack, got {tuple(f.shape)}")
    return f


class OFFLayer(nn.Module):
    """1x1 convolution (shared by all frames) followed by the OFF operator (paper Fig. 4).

    Args:
        in_channels: channels of the backbone features.
        reduce: channels after the 1x1 convolution (128 in the paper).
        mode: ``"off"`` (Sobel x, Sobel y of ``f_t`` and ``f_t - f_prev``: ``3 * reduce``
            output channels, the paper's layer), ``"temporal"`` (the difference only,
            ``reduce`` channels: the authors' flow-OFF and RGB-diff-OFF nets) or ``"rgb"``
            (the authors' RGB-OFF: the difference of the ``reduce``-channel map plus a
            ``spatial_channels``-channel spatial branch, its own 1x1 conv followed by the fixed
            depthwise Sobel x / Sobel y filter: ``reduce + 2 * spatial_channels`` channels).
        spatial_channels: width of the RGB-OFF spatial branch (32 in the authors' nets).

    Trainable: the 1x1 convolutions (weight and bias). The Sobel filters are fixed.

    Shapes:
        ``forward(f)``: ``(N, T, C, H, W)`` stack -> ``(N, T - 1, out_channels, H, W)``, pair
        ``s`` built from segments ``s + 1`` (current) and ``s`` (previous).
        ``forward(f_t, f_prev)``: two ``(N, C, H, W)`` maps -> ``(N, out_channels, H, W)``.
    """

    MODES = ("off", "temporal", "rgb")

    def __init__(
        self, in_channels: int, reduce: int = 128, mode: str = "off", spatial_channels: int = 32
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"OFFLayer: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.reduce = nn.Conv2d(in_channels, reduce, 1)
        self.spatial_channels = spatial_channels if mode == "rgb" else 0
        if mode == "rgb":
            self.spatial = nn.Conv2d(in_channels, spatial_channels, 1)
            self.register_buffer("sobel", sobel_weight(spatial_channels), persistent=False)
        widths = {"off": 3 * reduce, "temporal": reduce, "rgb": reduce + 2 * spatial_channels}
        self.out_channels = widths[mode]

    def forward(self, f: Tensor, f_prev: Tensor | None = None) -> Tensor:
        """OFF of a stack (one argument) or of a pair (two arguments)."""
        if f_prev is not None:
            if f.dim() != 4 or f.shape != f_prev.shape:
                raise ValueError(
                    f"OFFLayer: f_t and f_prev must be (N, C, H, W) of one shape, got "
                    f"{tuple(f.shape)} and {tuple(f_prev.shape)}"
                )
            r_t, r_prev = self.reduce(f), self.reduce(f_prev)
            if self.mode == "off":
                return off_gradients(r_t, r_prev)
            if self.mode == "temporal":
                return r_t - r_prev
            return torch.cat([self._spatial(f), r_t - r_prev], dim=1)
        n, t = _as_stack(f, "OFFLayer").shape[:2]
        flat = f.flatten(0, 1)
        r = self.reduce(flat)
        r = r.view(n, t, *r.shape[1:])
        if self.mode == "off":
            return off_gradients_stack(r)
        diff = r[:, 1:] - r[:, :-1]
        if self.mode == "temporal":
            return diff
        grad = self._spatial(f[:, 1:].flatten(0, 1))
        return torch.cat([grad.view(n, t - 1, *grad.shape[1:]), diff], dim=2)

    def _spatial(self, f: Tensor) -> Tensor:
        # RGB-OFF spatial branch: 1x1 conv, then the fixed depthwise Sobel x / y filter.
        s = self.spatial(f)
        return F.conv2d(s, self.sobel.to(s.dtype), padding=1, groups=s.shape[1])


class ResidualBlock(nn.Module):
    """Basic residual block without BatchNorm (the OFF sub-network avoids BN to not overfit).

    ``conv3x3(stride) - ReLU - conv3x3`` plus the identity, or a 1x1 projection where the
    channels or the stride change; ReLU after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, H, W) -> (B, out, H / stride, W / stride)``."""
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class OFFUnit(nn.Module):
    """One level of the OFF sub-network (paper Fig. 3/4).

    OFF of this level's features, concatenated with the previous level's output (brought to this
    resolution by a strided residual block), then residual blocks without BatchNorm; the first
    block reduces the channels to ``width``.

    Args:
        in_channels: channels of this level's backbone features.
        prev_channels: channels of the previous unit's output (0 for the first level).
        width: output channels of the unit.
        blocks: residual blocks after the concatenation (3 per level: the three levels form the
            paper's ResNet-20).
        prev_stride: resolution ratio between the previous level and this one (2 for 28 -> 14).
        reduce, mode, spatial_channels: of the :class:`OFFLayer`.

    Shapes:
        ``f``: ``(N, T, C, H, W)``; ``prev``: ``(N * (T - 1), prev_channels, H * s, W * s)`` or
        ``None``. Output ``(N * (T - 1), width, H, W)`` (pairs folded into the batch).
    """

    def __init__(
        self,
        in_channels: int,
        prev_channels: int = 0,
        width: int = 128,
        blocks: int = 3,
        prev_stride: int = 2,
        reduce: int = 128,
        mode: str = "off",
        spatial_channels: int = 32,
    ):
        super().__init__()
        self.layer = OFFLayer(in_channels, reduce, mode, spatial_channels)
        self.prev_channels = prev_channels
        self.prev_down = (
            ResidualBlock(prev_channels, prev_channels, prev_stride)
            if prev_channels and prev_stride != 1
            else nn.Identity()
        )
        if blocks < 1:
            raise ValueError(f"OFFUnit: blocks must be >= 1, got {blocks}")
        chans = [self.layer.out_channels + prev_channels] + [width] * blocks
        self.blocks = nn.Sequential(*(ResidualBlock(chans[i], chans[i + 1]) for i in range(blocks)))
        self.width = width

    def forward(self, f: Tensor, prev: Tensor | None = None) -> Tensor:
        """OFF, concatenation with ``prev``, residual blocks."""
        x = self.layer(f).flatten(0, 1)
        if self.prev_channels:
            if prev is None:
                raise ValueError("OFFUnit: this unit was built with prev_channels > 0: pass prev")
            prev = self.prev_down(prev)
            if prev.shape[0] != x.shape[0] or prev.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"OFFUnit: prev {tuple(prev.shape)} (after the stride) does not match the "
                    f"OFF map {tuple(x.shape)} in batch (N * (T - 1)) or spatial size"
                )
            x = torch.cat([x, prev], dim=1)
        return self.blocks(x)


class OFFSubNetwork(nn.Module):
    """The OFF sub-network: one :class:`OFFUnit` per feature level and a classifier per level.

    Every level's classifier (global average pooling, dropout, linear) scores each segment
    pair; the scores are averaged over the ``T - 1`` pairs (TSN consensus) and every level gets
    its own loss (intermediate supervision). At test time the paper adds the last level's score
    to the backbone's.

    Args:
        in_channels: backbone channels of each level, e.g. the sizes of
            :data:`~mvaccel.nn.BN_INCEPTION_TAPS` levels (576, 2880, 2048 on BN-Inception).
        num_classes: classes of the classifiers.
        widths: output channels of each unit.
        blocks: residual blocks per unit (3: ResNet-20 over three levels).
        strides: resolution ratio between consecutive levels (2: 28 -> 14 -> 7).
        dropout: before each classifier.
        reduce, mode, spatial_channels: of each :class:`OFFLayer`.

    Shapes:
        ``forward(levels)``: a sequence of ``(N, T, C_l, H_l, W_l)`` stacks (finest first) ->
        list of ``(N, num_classes)`` video-level scores, one per level (the last is the
        OFF sub-network's prediction).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (128, 192, 256),
        blocks: int = 3,
        strides: Sequence[int] | int = 2,
        dropout: float = 0.5,
        reduce: int = 128,
        mode: str = "off",
        spatial_channels: int = 32,
    ):
        super().__init__()
        levels = len(in_channels)
        if len(widths) != levels:
            raise ValueError(
                f"OFFSubNetwork: {levels} levels of in_channels but {len(widths)} widths"
            )
        strides = [strides] * (levels - 1) if isinstance(strides, int) else list(strides)
        self.units = nn.ModuleList()
        self.heads = nn.ModuleList()
        prev = 0
        for i, (cin, w) in enumerate(zip(in_channels, widths, strict=True)):
            stride = strides[i - 1] if i else 1
            self.units.append(OFFUnit(cin, prev, w, blocks, stride, reduce, mode, spatial_channels))
            self.heads.append(
                nn.Sequential(
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Dropout(dropout),
                    nn.Linear(w, num_classes),
                )
            )
            prev = w
        self.consensus = SegmentConsensus()

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        """Scores of every level for stacks of per-segment features."""
        if len(levels) != len(self.units):
            raise ValueError(
                f"OFFSubNetwork: expected {len(self.units)} feature levels, got {len(levels)}"
            )
        scores = []
        x = None
        for f, unit, head in zip(levels, self.units, self.heads, strict=True):
            n, t = _as_stack(f, "OFFSubNetwork").shape[:2]
            x = unit(f, x)
            scores.append(self.consensus(head(x).view(n, t - 1, -1)))
        return scores


class RawOFF(nn.Module):
    """Raw OFF: the OFF operator applied to the input frames themselves (no parameters).

    Args:
        grey: convert RGB to ITU-R BT.601 luma first (``C = 3`` inputs only).

    Shapes:
        ``(N, T, C, H, W)`` frames -> ``(N, T - 1, 3C, H, W)`` (``C = 1`` when ``grey``):
        Sobel x, Sobel y of frame ``s + 1`` and its difference with frame ``s``.
    """

    def __init__(self, grey: bool = False):
        super().__init__()
        self.grey = grey
        # 1-D: a 5-D buffer made `.to(memory_format=torch.channels_last)` raise ("required rank
        # 4 tensor"), which every 2-D network holding a RawOFF needs on the GPU.
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        """OFF of consecutive frames."""
        _as_stack(frames, "RawOFF")
        if self.grey:
            if frames.shape[2] != 3:
                raise ValueError(f"RawOFF(grey=True): expected RGB frames, got {frames.shape}")
            luma = self.luma.to(frames.dtype).view(1, 1, 3, 1, 1)
            frames = (frames * luma).sum(dim=2, keepdim=True)
        return off_gradients_stack(frames)


__all__ = ["OFFLayer", "OFFSubNetwork", "OFFUnit", "RawOFF", "ResidualBlock"]
