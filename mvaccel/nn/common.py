"""Building blocks shared by the motion networks: segment consensus and feature taps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

#: Taps of the authors' OFF nets on BN-Inception (their released Caffe prototxts): the outputs
#: of inception blocks 3a-3b feed the 28x28 level, 3c and 4a-4d the 14x14 level, 5a-5b the 7x7
#: level (224x224 input). The names are module names of a BN-Inception whose inception blocks
#: are submodules called ``inception_3a`` ... ``inception_5b`` (each module's output is the
#: block's concatenated output); pass your own taps for another naming or backbone.
BN_INCEPTION_TAPS: tuple[tuple[str, ...], ...] = (
    ("inception_3a", "inception_3b"),
    ("inception_3c", "inception_4a", "inception_4b", "inception_4c", "inception_4d"),
    ("inception_5a", "inception_5b"),
)

#: The same three resolutions on a torchvision ResNet (strides 8, 16, 32).
RESNET_TAPS: tuple[tuple[str, ...], ...] = (("layer2",), ("layer3",), ("layer4",))


class SegmentConsensus(nn.Module):
    """TSN segment consensus: the average of per-segment scores (or features).

    Args:
        num_segments: if given, inputs are ``(N * num_segments, ...)`` (segments folded into
            the batch, as a backbone sees them) and are unfolded first; otherwise inputs are
            ``(N, S, ...)``.
        dim: the segment dimension of ``(N, S, ...)`` inputs.

    Shapes:
        ``(N, S, *)`` or ``(N * S, *)`` -> ``(N, *)``. No parameters.
    """

    def __init__(self, num_segments: int | None = None, dim: int = 1):
        super().__init__()
        self.num_segments = num_segments
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        """Average over segments."""
        if self.num_segments is not None:
            if x.shape[0] % self.num_segments:
                raise ValueError(
                    f"SegmentConsensus: batch of {x.shape[0]} is not a multiple of "
                    f"num_segments={self.num_segments}"
                )
            x = x.view(-1, self.num_segments, *x.shape[1:])
            return x.mean(dim=1)
        return x.mean(dim=self.dim)

    def extra_repr(self) -> str:  # noqa: D102
        return f"num_segments={self.num_segments}, dim={self.dim}"


class FeatureTaps(nn.Module):
    """Pull named intermediate feature maps out of any torch backbone, grouped by level.

    Forward hooks on the named submodules record their outputs while the backbone runs; the
    outputs of one level are concatenated along channels (they must share a spatial size).
    The backbone runs in full, so hand in a truncated one (e.g. without its classifier) to save
    the work after the last tap.

    Args:
        backbone: any ``nn.Module`` taking ``(B, C, H, W)`` images.
        taps: one sequence of submodule names (as in ``named_modules()``) per level, e.g.
            :data:`BN_INCEPTION_TAPS` (the OFF authors' choice, the documented default for a
            BN-Inception) or :data:`RESNET_TAPS`. A mapping ``{level_name: names}`` is also
            accepted; levels keep its order.

    Shapes:
        ``(B, C, H, W)`` -> list of ``(B, C_l, H_l, W_l)``, one per level.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1))
        >>> taps = FeatureTaps(net, [["0"], ["1"]])
        >>> [t.shape[1:] for t in taps(torch.randn(1, 3, 32, 32))]
        [torch.Size([8, 16, 16]), torch.Size([16, 8, 8])]
    """

    def __init__(
        self,
        backbone: nn.Module,
        taps: Sequence[Sequence[str]] | Mapping[str, Sequence[str]] = BN_INCEPTION_TAPS,
    ):
        super().__init__()
        self.backbone = backbone
        levels = list(taps.values()) if isinstance(taps, Mapping) else list(taps)
        if not levels or any(isinstance(lv, str) or not lv for lv in levels):
            raise ValueError(
                f"FeatureTaps: taps must be a non-empty sequence of non-empty name sequences "
                f"(one per level), got {taps!r}"
            )
        self.level_names = [tuple(lv) for lv in levels]
        modules = dict(backbone.named_modules())
        missing = [n for lv in self.level_names for n in lv if n not in modules]
        if missing:
            known = [n for n in modules if n][:20]
            raise ValueError(
                f"FeatureTaps: the backbone has no submodules {missing}; some of its names: {known}"
            )
        self._store: dict[str, Tensor] = {}
        self._handles = []
        for name in {n for lv in self.level_names for n in lv}:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args, output):
            self._store[name] = output

        return hook

    def forward(self, x: Tensor) -> list[Tensor]:
        """Run the backbone on ``x`` and return the tapped levels."""
        self._store.clear()
        self.backbone(x)
        levels = []
        for names in self.level_names:
            maps = [self._store[n] for n in names]
            levels.append(maps[0] if len(maps) == 1 else torch.cat(maps, dim=1))
        self._store.clear()
        return levels

    @torch.no_grad()
    def level_channels(self, example: Tensor) -> list[int]:
        """Channels of each level for an example input (runs the backbone once)."""
        return [t.shape[1] for t in self(example)]
