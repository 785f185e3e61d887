"""block_upsample / mv_resize against the torch code a user would write otherwise.

Shapes: a batch of 8 two-channel motion fields at 1080x1920 output (the issue's target size),
from an 8x8 block grid (block_upsample) or from a 540x960 field (mv_resize). Run with
``make bench`` (CPU) or ``bench/gpu_check.sh`` (CUDA); ``bench/report.py`` prints the table.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import timed

import mvaccel.ops as ops

N, C, H, W, B = 8, 2, 1080, 1920, 8


def _blocks(device):
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, C, math.ceil(H / B), math.ceil(W / B), generator=g).to(device)


def _field(device):
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, C, H // 2, W // 2, generator=g).to(device)


def _bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


IMPLS_BLOCK = {
    "mvaccel": lambda x, mode: ops.block_upsample(x, B, (H, W), mode),
    "torch F.interpolate": lambda x, mode: F.interpolate(
        x,
        scale_factor=B,
        mode="nearest" if mode == "nearest" else "bilinear",
        **({} if mode == "nearest" else {"align_corners": False}),
    )[:, :, :H, :W],
    "torch repeat_interleave": lambda x, mode: x.repeat_interleave(B, 2).repeat_interleave(B, 3)[
        :, :, :H, :W
    ],
}


@pytest.mark.parametrize("impl", list(IMPLS_BLOCK))
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_block_upsample(benchmark, device, mode, impl):
    if impl == "torch repeat_interleave" and mode == "bilinear":
        pytest.skip("repeat_interleave has no bilinear form")
    x = _blocks(device)
    fn = IMPLS_BLOCK[impl]
    out = fn(x, mode)
    benchmark.group = f"block_upsample {mode} {device} {N}x{C}x{H}x{W}"
    benchmark.extra_info["bytes"] = _bytes(x, out)
    benchmark(timed(lambda: fn(x, mode), device))


def _torch_mv_resize(mv, size, mode):
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(mv, size=size, mode="nearest-exact" if mode == "nearest" else mode, **kw)
    scale = torch.tensor([size[1] / mv.shape[3], size[0] / mv.shape[2]], device=mv.device)
    return out * scale.view(1, 2, 1, 1)


IMPLS_RESIZE = {
    "mvaccel": lambda mv, mode: ops.mv_resize(mv, (H, W), mode),
    "torch F.interpolate + scale": lambda mv, mode: _torch_mv_resize(mv, (H, W), mode),
}


@pytest.mark.parametrize("impl", list(IMPLS_RESIZE))
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_mv_resize(benchmark, device, mode, impl):
    mv = _field(device)
    fn = IMPLS_RESIZE[impl]
    out = fn(mv, mode)
    benchmark.group = f"mv_resize {mode} {device} {N}x{C}x{H // 2}x{W // 2}->{H}x{W}"
    benchmark.extra_info["bytes"] = _bytes(mv, out)
    benchmark(timed(lambda: fn(mv, mode), device))


@pytest.mark.cuda
def test_copy_bandwidth(benchmark):
    """The device's copy bandwidth on the output's size: the roof for the ops above."""
    src = torch.randn(N, C, H, W, device="cuda")
    dst = torch.empty_like(src)
    benchmark.group = "copy cuda (bandwidth roof)"
    benchmark.extra_info["bytes"] = 2 * _bytes(src)
    benchmark(timed(lambda: dst.copy_(src), "cuda"))
