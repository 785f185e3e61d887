"""The built-in demo (``make demo`` / ``mvaccel demo``), on synthetic data.

It shows the block-grid to pixel path that every compressed-domain model uses: a motion field
on a codec's 8x8 block grid is spread to pixels (codec-exact and smoothed), resized to a
network's input size with its values rescaled, and written as Middlebury-coloured PNGs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch


def synthetic_block_field(hb: int, wb: int, block: int) -> torch.Tensor:
    """A rotation plus a translation on a block grid: ``(1, 2, hb, wb)`` vectors in pixels."""
    ys = (torch.arange(hb, dtype=torch.float32) + 0.5) * block
    xs = (torch.arange(wb, dtype=torch.float32) + 0.5) * block
    y, x = torch.meshgrid(ys - ys.mean(), xs - xs.mean(), indexing="ij")
    angle = math.radians(3.0)
    dx = (math.cos(angle) - 1) * x - math.sin(angle) * y + 2.0
    dy = math.sin(angle) * x + (math.cos(angle) - 1) * y - 1.0
    return torch.stack([dx, dy])[None]


def run(out_dir: str | Path = "out/demo") -> dict[str, Path]:
    """Run the demo, write its PNGs under ``out_dir`` and return their paths."""
    from . import ops
    from .info import collect, format_facts
    from .viz import flow_to_color, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(format_facts(collect()))
    print()

    h, w, block = 256, 340, 8  # CoViAR's frame size, H.264's 8x8 vector grid
    field = synthetic_block_field(math.ceil(h / block), math.ceil(w / block), block)
    t0 = time.perf_counter()
    dense = ops.block_upsample(field, block, (h, w), "nearest")
    smooth = ops.block_upsample(field, block, (h, w), "bilinear")
    net_in = ops.mv_resize(smooth, (224, 224))
    ms = (time.perf_counter() - t0) * 1e3
    top = max(float(dense.abs().max()), 1e-6)
    paths = {
        "blocks": save_png(flow_to_color(dense[0], top), out / "mv_blocks_nearest.png"),
        "smooth": save_png(flow_to_color(smooth[0], top), out / "mv_bilinear.png"),
        "resized": save_png(flow_to_color(net_in[0], top), out / "mv_resized_224.png"),
    }
    print(f"block field {tuple(field.shape)} -> pixels {tuple(dense.shape)} ({ms:.2f} ms, 3 ops)")
    before, after = float(smooth[0, 0].abs().max()), float(net_in[0, 0].abs().max())
    print(
        f"mv_resize {w}x{h} -> 224x224 scales x by {224 / w:.3f} and y by {224 / h:.3f}: "
        f"max |dx| {before:.2f} -> {after:.2f} px"
    )
    for name, p in paths.items():
        print(f"wrote {name:8s} {p}")
    return paths
