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

#: The fixed 3x3 kernel of the authors' RGB-OFF spatial branch (their Caffe ``sobel`` filler).
AUTHORS_SPATIAL_KERNEL = ((0.0, 1.0, 0.0), (-1.0, 0.0, 1.0), (0.0, -1.0, 0.0))


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
        relu: ReLU after the 1x1 convolution (the authors' ``motion_relu_gen_*``).
        spatial_kernel: the ``"rgb"`` branch's fixed depthwise filter: ``"authors"`` (their
            ``sobel`` filler: one 3x3 kernel per channel, ``[[0, 1, 0], [-1, 0, 1],
            [0, -1, 0]]``, the sum of the x and y central differences, on the earlier frame of
            each pair: ``spatial_channels`` outputs) or ``"sobel_xy"`` (Sobel x and Sobel y per
            channel on the current frame, ``2 * spatial_channels`` outputs: mvaccel's earlier
            reading).
        spatial_dropout: dropout on the spatial branch's output (0.8 in the authors' RGB-OFF).

    Trainable: the 1x1 convolutions (weight and bias). The Sobel filters are fixed.

    Shapes:
        ``forward(f)``: ``(N, T, C, H, W)`` stack -> ``(N, T - 1, out_channels, H, W)``, pair
        ``s`` built from segments ``s + 1`` (current) and ``s`` (previous).
        ``forward(f_t, f_prev)``: two ``(N, C, H, W)`` maps -> ``(N, out_channels, H, W)``.
    """

    MODES = ("off", "temporal", "rgb")
    SPATIAL_KERNELS = ("authors", "sobel_xy")

    def __init__(
        self,
        in_channels: int,
        reduce: int = 128,
        mode: str = "off",
        spatial_channels: int = 32,
        relu: bool = False,
        spatial_kernel: str = "sobel_xy",
        spatial_dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"OFFLayer: mode must be one of {self.MODES}, got {mode!r}")
        if spatial_kernel not in self.SPATIAL_KERNELS:
            raise ValueError(
                f"OFFLayer: spatial_kernel must be one of {self.SPATIAL_KERNELS}, got "
                f"{spatial_kernel!r}"
            )
        self.mode, self.relu, self.spatial_kernel = mode, relu, spatial_kernel
        self.reduce = nn.Conv2d(in_channels, reduce, 1)
        self.spatial_channels = spatial_channels if mode == "rgb" else 0
        spatial_out = 0
        if mode == "rgb":
            self.spatial = nn.Conv2d(in_channels, spatial_channels, 1)
            if spatial_kernel == "authors":
                k = torch.tensor(AUTHORS_SPATIAL_KERNEL).view(1, 1, 3, 3)
                self.register_buffer("sobel", k.repeat(spatial_channels, 1, 1, 1), persistent=False)
                spatial_out = spatial_channels
            else:
                self.register_buffer("sobel", sobel_weight(spatial_channels), persistent=False)
                spatial_out = 2 * spatial_channels
            self.spatial_dropout = nn.Dropout(spatial_dropout) if spatial_dropout else nn.Identity()
        widths = {"off": 3 * reduce, "temporal": reduce, "rgb": reduce + spatial_out}
        self.out_channels = widths[mode]

    def _reduce(self, f: Tensor) -> Tensor:
        r = self.reduce(f)
        return F.relu(r) if self.relu else r

    def forward(self, f: Tensor, f_prev: Tensor | None = None) -> Tensor:
        """OFF of a stack (one argument) or of a pair (two arguments)."""
        if f_prev is not None:
            if f.dim() != 4 or f.shape != f_prev.shape:
                raise ValueError(
                    f"OFFLayer: f_t and f_prev must be (N, C, H, W) of one shape, got "
                    f"{tuple(f.shape)} and {tuple(f_prev.shape)}"
                )
            r_t, r_prev = self._reduce(f), self._reduce(f_prev)
            if self.mode == "off":
                return off_gradients(r_t, r_prev)
            if self.mode == "temporal":
                return r_t - r_prev
            return torch.cat([self._spatial(f_prev if self._earlier else f), r_t - r_prev], 1)
        n, t = _as_stack(f, "OFFLayer").shape[:2]
        flat = f.flatten(0, 1)
        r = self._reduce(flat)
        r = r.view(n, t, *r.shape[1:])
        if self.mode == "off":
            return off_gradients_stack(r)
        diff = r[:, 1:] - r[:, :-1]
        if self.mode == "temporal":
            return diff
        frames = f[:, :-1] if self._earlier else f[:, 1:]
        grad = self._spatial(frames.flatten(0, 1))
        return torch.cat([grad.view(n, t - 1, *grad.shape[1:]), diff], dim=2)

    @property
    def _earlier(self) -> bool:
        return self.spatial_kernel == "authors"

    def _spatial(self, f: Tensor) -> Tensor:
        # RGB-OFF spatial branch: 1x1 conv, then the fixed depthwise filter (and dropout).
        s = self.spatial(f)
        g = F.conv2d(s, self.sobel.to(s.dtype), padding=1, groups=s.shape[1])
        return self.spatial_dropout(g)


class TapOFFLayer(nn.Module):
    """One :class:`OFFLayer` per tapped block of a level (the authors' nets), outputs concatenated.

    The authors give every inception block its own 1x1 convolution + ReLU and OFF
    (``motion_conv_gen_3a``, ``motion_conv_gen_3b`` ...) and concatenate the results; the
    level's input is the taps' features concatenated along the channels, split back here.

    Args:
        in_channels: channels of each tap, in concatenation order.
        **kw: :class:`OFFLayer`'s arguments (``reduce``, ``mode``, ...), the same for every tap.

    Shapes:
        ``(N, T, sum(in_channels), H, W)`` -> ``(N, T - 1, out_channels, H, W)``.
    """

    def __init__(self, in_channels: Sequence[int], **kw):
        super().__init__()
        self.splits = [int(c) for c in in_channels]
        if not self.splits or min(self.splits) < 1:
            raise ValueError(f"TapOFFLayer: in_channels must be >= 1 each, got {in_channels}")
        self.taps = nn.ModuleList(OFFLayer(c, **kw) for c in self.splits)
        self.out_channels = sum(t.out_channels for t in self.taps)

    def forward(self, f: Tensor) -> Tensor:
        """OFF of every tap of a stack, concatenated along the channels."""
        if _as_stack(f, "TapOFFLayer").shape[2] != sum(self.splits):
            raise ValueError(
                f"TapOFFLayer: expected {sum(self.splits)} channels (taps {self.splits}), got "
                f"{f.shape[2]}"
            )
        parts = torch.split(f, self.splits, dim=2)
        return torch.cat([layer(x) for layer, x in zip(self.taps, parts, strict=True)], dim=2)


class Bottleneck(nn.Module):
    """The authors' bottleneck without BatchNorm: 1x1 - 3x3 - 1x1 (or 3x3), plus the shortcut.

    ``conv1 (1x1, mid) - ReLU - conv2 (3x3, mid) - ReLU - conv3 (last_kernel, out)`` plus the
    identity or a 1x1 projection (``motion_conv_branch_*``) when the channels change; ReLU after
    the sum unless ``relu=False`` (their last block, ``motion_sum``, has none).
    """

    def __init__(self, cin: int, mid: int, cout: int, last_kernel: int = 1, relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, 1, 1)
        self.conv3 = nn.Conv2d(mid, cout, last_kernel, 1, last_kernel // 2)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, H, W) -> (B, cout, H, W)``."""
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))) + self.shortcut(x)
        return F.relu(y) if self.relu else y


#: The authors' OFF sub-network (kevin-ssy/Optical-Flow-Guided-Feature, ``train.prototxt`` of
#: rgb_off, flow_off, rgb_diff_off), per level: the transition convolution ``(out, kernel,
#: stride)`` + ReLU after the concatenation, then bottlenecks ``(mid, out, last_kernel)``; the
#: last level's sum has no ReLU. 28x28 -> 14x14 (256), 14x14 -> 7x7 (512), 7x7 (1024).
AUTHORS_LEVELS = (
    ((64, 7, 2), ((64, 256, 1), (64, 256, 1), (64, 256, 1))),
    ((128, 5, 2), ((128, 512, 1), (128, 512, 3))),  # sic: their 14b's third conv is 3x3
    ((256, 3, 1), ((256, 1024, 1),)),
)


class AuthorsOFFUnit(nn.Module):
    """One level of the authors' OFF sub-network.

    The OFF of the level's taps (:class:`TapOFFLayer`: a 1x1 conv + ReLU per tap) is
    concatenated with the previous level's output (already at this resolution), then a
    ``k x k / stride`` transition convolution + ReLU and the bottlenecks of
    :data:`AUTHORS_LEVELS`.

    Shapes:
        ``f``: ``(N, T, sum(taps), H, W)``; ``prev``: ``(N * (T - 1), prev_channels, H, W)``
        or None. Output ``(N * (T - 1), width, H / stride, W / stride)``.
    """

    def __init__(self, taps: Sequence[int], prev_channels: int, spec, last: bool, **off_kw):
        super().__init__()
        (tw, tk, ts), blocks = spec
        self.layer = TapOFFLayer(taps, **off_kw)
        self.prev_channels = prev_channels
        self.transition = nn.Conv2d(self.layer.out_channels + prev_channels, tw, tk, ts, tk // 2)
        mods, cin = [], tw
        for i, (mid, out, k) in enumerate(blocks):
            mods.append(Bottleneck(cin, mid, out, k, relu=not (last and i == len(blocks) - 1)))
            cin = out
        self.blocks = nn.Sequential(*mods)
        self.width = cin

    def forward(self, f: Tensor, prev: Tensor | None = None) -> Tensor:
        """OFF, concatenation with ``prev``, transition, bottlenecks."""
        x = self.layer(f).flatten(0, 1)
        if self.prev_channels:
            if prev is None or prev.shape[0] != x.shape[0] or prev.shape[2:] != x.shape[2:]:
                got = None if prev is None else tuple(prev.shape)
                raise ValueError(
                    f"AuthorsOFFUnit: prev must be (N * (T - 1), {self.prev_channels}, "
                    f"{x.shape[2]}, {x.shape[3]}) like the OFF map {tuple(x.shape)}, got {got}"
                )
            x = torch.cat([x, prev], dim=1)
        return self.blocks(F.relu(self.transition(x)))


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


ARCHITECTURES = ("authors", "resnet20")


class OFFSubNetwork(nn.Module):
    """The OFF sub-network: an OFF unit per feature level and a classifier per level.

    Every level's classifier (global average pooling, dropout, linear) scores each segment
    pair; the scores are averaged over the ``T - 1`` pairs (TSN consensus) and every level gets
    its own loss (intermediate supervision). At test time the paper adds the last level's score
    to the backbone's.

    Two architectures:

    - ``"authors"`` (default): the authors' released Caffe nets (:data:`AUTHORS_LEVELS`): a 1x1
      conv + ReLU and OFF per tapped block (:class:`TapOFFLayer`), concatenation with the
      previous level, a 7x7/2, 5x5/2, 3x3/1 transition conv + ReLU, bottlenecks without
      BatchNorm with 256, 512, 1024 outputs (:class:`Bottleneck`); the first level's head
      max-pools 3x3/2 before its global average; dropout ``dropout`` before every classifier
      and on the RGB-OFF spatial branch (their fixed kernel,
      :data:`AUTHORS_SPATIAL_KERNEL`). Exactly three levels; ``widths``, ``blocks`` and
      ``strides`` are the authors' and ignored.
    - ``"resnet20"``: mvaccel's earlier reading of the paper's text ("residual blocks ...
      constitute a ResNet-20"): one 1x1 conv per level (no ReLU), basic residual blocks
      without BatchNorm (:class:`OFFUnit`) of ``widths`` channels, ``blocks`` per level, the
      previous level brought down by a strided block; the widths are mvaccel's choice, not
      the paper's (which gives none).

    Args:
        in_channels: backbone channels of each level: an int (the taps concatenated) or, for
            ``"authors"``, the channels of each tap (one 1x1 conv each; an int is one tap).
        num_classes: classes of the classifiers.
        widths: ``"resnet20"``: output channels of each unit.
        blocks: ``"resnet20"``: residual blocks per unit (3: ResNet-20 over three levels).
        strides: ``"resnet20"``: resolution ratio between consecutive levels (2: 28 -> 14 -> 7).
        dropout: before each classifier (0.8 in the authors' nets).
        reduce, mode, spatial_channels: of each :class:`OFFLayer`.
        architecture: ``"authors"`` or ``"resnet20"``.

    Shapes:
        ``forward(levels)``: a sequence of ``(N, T, C_l, H_l, W_l)`` stacks (finest first) ->
        list of ``(N, num_classes)`` video-level scores, one per level (the last is the
        OFF sub-network's prediction).
    """

    def __init__(
        self,
        in_channels: Sequence[int | Sequence[int]],
        num_classes: int,
        widths: Sequence[int] = (128, 192, 256),
        blocks: int = 3,
        strides: Sequence[int] | int = 2,
        dropout: float = 0.8,
        reduce: int = 128,
        mode: str = "off",
        spatial_channels: int = 32,
        architecture: str = "authors",
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"OFFSubNetwork: architecture must be one of {ARCHITECTURES}, got {architecture!r}"
            )
        self.architecture = architecture
        levels = len(in_channels)
        taps = [[c] if isinstance(c, int) else [int(x) for x in c] for c in in_channels]
        self.units = nn.ModuleList()
        self.heads = nn.ModuleList()
        prev = 0
        if architecture == "authors":
            if levels != len(AUTHORS_LEVELS):
                raise ValueError(
                    f"OFFSubNetwork(architecture='authors'): the authors' net has "
                    f"{len(AUTHORS_LEVELS)} levels (28, 14, 7 on BN-Inception), got {levels}"
                )
            off_kw = dict(reduce=reduce, mode=mode, spatial_channels=spatial_channels,
                          relu=True, spatial_kernel="authors", spatial_dropout=dropout)  # fmt: skip
            for i, (tap, spec) in enumerate(zip(taps, AUTHORS_LEVELS, strict=True)):
                unit = AuthorsOFFUnit(tap, prev, spec, i == levels - 1, **off_kw)
                self.units.append(unit)
                # the first level's output is at the next level's resolution: their
                # motion_pool_trans_28 (max 3x3/2) brings it to 7x7 before the global pool
                pool = [nn.MaxPool2d(3, 2, ceil_mode=True)] if i == 0 else []
                self.heads.append(self._head(pool, unit.width, dropout, num_classes))
                prev = unit.width
        else:
            if len(widths) != levels:
                raise ValueError(
                    f"OFFSubNetwork: {levels} levels of in_channels but {len(widths)} widths"
                )
            strides = [strides] * (levels - 1) if isinstance(strides, int) else list(strides)
            for i, (tap, w) in enumerate(zip(taps, widths, strict=True)):
                stride = strides[i - 1] if i else 1
                unit = OFFUnit(sum(tap), prev, w, blocks, stride, reduce, mode, spatial_channels)
                self.units.append(unit)
                self.heads.append(self._head([], w, dropout, num_classes))
                prev = w
        self.consensus = SegmentConsensus()

    @staticmethod
    def _head(pool: list, width: int, dropout: float, num_classes: int) -> nn.Sequential:
        return nn.Sequential(
            *pool,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

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


__all__ = [
    "ARCHITECTURES",
    "AUTHORS_LEVELS",
    "AUTHORS_SPATIAL_KERNEL",
    "AuthorsOFFUnit",
    "Bottleneck",
    "OFFLayer",
    "OFFSubNetwork",
    "OFFUnit",
    "RawOFF",
    "ResidualBlock",
    "TapOFFLayer",
]
