"""TV-L1: mvaccel's kernels against OpenCV's DualTVL1 (CPU, same parameters and threads) and
against mvaccel's pure-torch reference (CUDA, same GPU).

Inputs: FlyingChairs pair 0000000 (../shared/data) cut to the bench size, or a seeded
synthetic texture pair where the data is missing. Default sizes keep ``pytest bench
--benchmark-disable`` fast; ``MVACCEL_BENCH_FULL=1`` uses the issue's sizes (512x384 and
340x256, batch 64), which take minutes. Numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import timed

from mvaccel.flow import TVL1Params, tvl1

FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
SIZES = [(384, 512), (256, 340)] if FULL else [(96, 128)]
BATCHES = [1, 64] if FULL else [1, 4]
ROUNDS = 3
DATA = Path(
    os.environ.get("MVACCEL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def pair(h: int, w: int, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, h, w) uint8 frames: FlyingChairs pair 0 resized, or a synthetic texture pair."""
    d = DATA / "flyingchairs"
    if (d / "0000000-img0.png").is_file():
        from PIL import Image

        a, b = (
            torch.from_numpy(np.asarray(Image.open(d / f"0000000-img{k}.png").convert("L")))
            for k in (0, 1)
        )
        x = torch.stack([a, b]).float()[:, None]
    else:
        g = torch.Generator().manual_seed(0)
        x = F.interpolate(torch.rand(1, 1, 48, 64, generator=g), size=(384, 512), mode="bicubic")
        x = torch.cat([x, torch.roll(x, (1, 2), (2, 3))]).clamp(0, 1) * 255
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="area")
    x = x.round().to(torch.uint8)
    return x[:1].expand(n, -1, -1, -1).contiguous(), x[1:].expand(n, -1, -1, -1).contiguous()


def opencv_solver(p: TVL1Params):
    import cv2

    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps,
        epsilon=p.epsilon, innnerIterations=p.inner_iterations,
        outerIterations=p.outer_iterations, scaleStep=p.scale_step, gamma=0.0,
        medianFiltering=p.median,
    )  # fmt: skip


@pytest.mark.parametrize("impl", ["mvaccel", "opencv"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("preset", ["opencv", "fast"])
def test_tvl1_cpu_vs_opencv(benchmark, preset, size, impl):
    p = TVL1Params.preset(preset)
    a, b = pair(*size)
    if impl == "opencv":
        cv2 = pytest.importorskip("cv2")
        if not hasattr(cv2, "optflow"):
            pytest.skip("needs opencv-contrib-python-headless")
        cv2.setNumThreads(torch.get_num_threads())
        a0, b0 = a[0, 0].numpy(), b[0, 0].numpy()

        def fn():
            # a fresh solver per call: calc() shrinks its own nscales on small images
            return opencv_solver(p).calc(a0, b0, None)
    else:

        def fn():
            return tvl1(a, b, p)

    benchmark.group = f"tvl1 {preset} cpu {size[1]}x{size[0]} threads={torch.get_num_threads()}"
    benchmark.extra_info["pairs"] = 1
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("preset", ["opencv", "dense_flow", "fast", "tvnet"])
def test_tvl1_pairs_per_s(benchmark, device, preset, batch):
    h, w = (256, 340) if FULL else (96, 128)
    a, b = (t.to(device) for t in pair(h, w, batch))
    p = TVL1Params.preset(preset)
    benchmark.group = f"tvl1 pairs/s {device} {w}x{h}"
    benchmark.extra_info["pairs"] = batch
    benchmark.pedantic(timed(lambda: tvl1(a, b, p), device), rounds=ROUNDS, iterations=1)


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_tvl1_cuda_vs_reference(benchmark, impl):
    h, w = (256, 340) if FULL else (96, 128)
    a, b = (t.cuda() for t in pair(h, w, 16))
    p = TVL1Params.preset("dense_flow")
    benchmark.group = f"tvl1 dense_flow cuda {w}x{h} batch 16"
    benchmark.extra_info["pairs"] = 16
    benchmark.pedantic(
        timed(lambda: tvl1(a, b, p, backend=impl), "cuda"), rounds=ROUNDS, iterations=1
    )
