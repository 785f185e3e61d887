"""TV-L1: mvaccel's kernels against OpenCV's DualTVL1 (CPU, same parameters and threads), against
mvaccel's pure-torch reference (same device), pairs/s per preset and batch, EPE of the CUDA
kernel against the CPU kernel, and ``mvaccel flow`` over a tree: pipelined vs sequential.

Inputs: FlyingChairs pairs 0000000-0000002 from ``$MVACCEL_SHARED_DATA/flyingchairs`` (default
../shared/data; on a GPU machine without it, ``bench/pack_gpu_data.sh`` packs them into
``gpu_data/``). The pairs/s, reference and EPE tests skip with a reason without them; the
CPU-vs-OpenCV test falls back to a seeded synthetic texture pair. CUDA runs at the issue's
340x256 with batches 1, 64, 256 (``-k cuda``, or ``bench/gpu_check_flow.sh``); CPU sizes stay
small so ``pytest bench --benchmark-disable`` is fast, ``MVACCEL_BENCH_FULL=1`` uses 340x256
(minutes). The tree test renders ``MVACCEL_BENCH_TREE`` = ``VIDEOSxFRAMES`` synthetic 320x240
videos (default 3x8; bench/RESULTS.md used 20x60 on CPU). A summary table (pairs/s, latency,
EPE, videos/s, CPU time) is printed at the end of the module. Numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES, timed

from mvaccel.flow import TVL1Params, epe, read_flo, tvl1

FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
SIZES = [(384, 512), (256, 340)] if FULL else [(96, 128)]
BATCHES = [1, 64] if FULL else [1, 4]
ROUNDS = 3
DATA = Path(
    os.environ.get("MVACCEL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CHAIRS = DATA / "flyingchairs"
needs_chairs = pytest.mark.skipif(
    not (CHAIRS / "0000002-gt.flo").is_file(),
    reason=f"FlyingChairs pairs 0-2 not in {CHAIRS}: set MVACCEL_SHARED_DATA (on a GPU machine: "
    "bench/pack_gpu_data.sh, carry gpu_data/, MVACCEL_SHARED_DATA=$PWD/gpu_data)",
)
PRESETS = ["dense_flow", "opencv", "fast", "tvnet"]
#: UCF101: 13320 clips, about 2.5 M consecutive-frame pairs (issue 15).
UCF101_PAIRS = 2.5e6
#: Lines of the summary printed at the end of the module (see ``_summary``).
ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if ROWS:  # past the output capture, so it shows without -s
        plugins = request.config.pluginmanager
        tr, cap = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
        with cap.global_and_fixture_disabled():
            tr.write_line("")
            for line in ROWS:
                tr.write_line(line)
        ROWS.clear()


def _median(benchmark) -> float | None:
    """The median seconds of a finished benchmark (None under --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


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


def _rate_cases(batches_cuda, batches_cpu, presets):
    for device in ("cpu", "cuda"):
        mark = [pytest.mark.cuda] if device == "cuda" else []
        for preset in presets:
            for batch in batches_cuda if device == "cuda" else batches_cpu:
                yield pytest.param(device, preset, batch, marks=mark,
                                   id=f"{device}-{preset}-{batch}")  # fmt: skip


def _bench_size(device: str) -> tuple[int, int]:
    return (256, 340) if device == "cuda" or FULL else (96, 128)


@needs_chairs
@pytest.mark.parametrize("device,preset,batch", _rate_cases([1, 64, 256], BATCHES, PRESETS))
def test_tvl1_pairs_per_s(benchmark, device, preset, batch):
    """Pairs/s of the kernel on FlyingChairs pair 0 (batch 1: the single-pair latency)."""
    h, w = _bench_size(device)
    a, b = (t.to(device) for t in pair(h, w, batch))
    p = TVL1Params.preset(preset)
    benchmark.group = f"tvl1 pairs/s {device} {w}x{h}"
    benchmark.extra_info["pairs"] = batch
    fn = timed(lambda: tvl1(a, b, p), device)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=int(device == "cuda"))
    t = _median(benchmark)
    if t is not None:
        ROWS.append(f"tvl1 kernel {device} {w}x{h} {preset:>10} batch {batch:>3}: "
                    f"{batch / t:9.1f} pairs/s, {1e3 * t:9.2f} ms per call")  # fmt: skip


@needs_chairs
@pytest.mark.parametrize(
    "device,preset,batch",
    [*_rate_cases([1, 64], [], ["dense_flow"]), ("cpu", "dense_flow" if FULL else "fast", 1)],
)
def test_tvl1_reference_pairs_per_s(benchmark, device, preset, batch):
    """The same pairs through the pure-torch TV-L1 (mvaccel/flow/reference.py), same device.

    CPU: ``fast`` (dense_flow's 300-iteration reference takes ~20 s) unless MVACCEL_BENCH_FULL.
    """
    h, w = _bench_size(device)
    a, b = (t.to(device) for t in pair(h, w, batch))
    p = TVL1Params.preset(preset)
    benchmark.group = f"tvl1 pairs/s {device} {w}x{h}"
    benchmark.extra_info["pairs"] = batch
    fn = timed(lambda: tvl1(a, b, p, backend="reference"), device)
    benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=int(device == "cuda"))
    t = _median(benchmark)
    if t is not None:
        ROWS.append(f"tvl1 pure-torch reference {device} {w}x{h} {preset} batch {batch}: "
                    f"{batch / t:.1f} pairs/s, {1e3 * t:.1f} ms per call")  # fmt: skip


def chairs(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlyingChairs pair ``k`` at 512x384: (1, 1, H, W) uint8 grey frames and (1, 2, H, W) gt."""
    from PIL import Image

    a, b = (torch.from_numpy(np.array(Image.open(CHAIRS / f"{k:07d}-img{i}.png").convert("L")))
            for i in (0, 1))  # fmt: skip
    return a[None, None], b[None, None], read_flo(CHAIRS / f"{k:07d}-gt.flo")[None]


@needs_chairs
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PRESETS)
def test_tvl1_epe_vs_cpu_kernel(benchmark, device, preset):
    """EPE against the ground truth of pairs 0-2 (512x384, one call of 3 pairs, timed): the
    CUDA kernel's within 1 % of the CPU kernel's."""
    if device == "cpu" and not FULL and preset not in ("fast", "tvnet"):
        pytest.skip("the CPU rows of dense_flow / opencv take ~10 s: MVACCEL_BENCH_FULL=1")
    p = TVL1Params.preset(preset)
    a, b, gt = (torch.cat(t) for t in zip(*(chairs(k) for k in range(3)), strict=True))
    da, db = a.to(device), b.to(device)
    benchmark.group = f"tvl1 FlyingChairs 0-2 {device} 512x384"
    benchmark.extra_info["pairs"] = 3
    flow = benchmark.pedantic(timed(lambda: tvl1(da, db, p), device), rounds=1, iterations=1)
    flow = flow.cpu() if flow is not None else tvl1(da, db, p).cpu()
    cpu = [float(epe(f, g)) for f, g in zip(tvl1(a, b, p), gt, strict=True)]
    zero = [float(epe(torch.zeros_like(g), g)) for g in gt]
    assert all(e < z for e, z in zip(cpu, zero, strict=True)), (cpu, zero)
    line = f"EPE {preset:>10} pairs 0-2: cpu kernel " + " ".join(f"{e:.4f}" for e in cpu)
    if device == "cuda":
        gpu = [float(epe(f, g)) for f, g in zip(flow, gt, strict=True)]
        rel = abs(sum(gpu) - sum(cpu)) / sum(cpu)
        line += "; cuda kernel " + " ".join(f"{e:.4f}" for e in gpu) + f" ({100 * rel:+.2f} %)"
    ROWS.append(line)
    if device == "cuda":
        assert rel <= 0.01, line


def _tree_spec() -> tuple[int, int]:
    v, f = os.environ.get("MVACCEL_BENCH_TREE", "3x8").lower().split("x")
    return int(v), int(f)


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    """``VIDEOSxFRAMES`` synthetic 320x240 mpeg4 videos (a small UCF101-like tree).

    Rendered by :func:`mvaccel.data.synthetic.render_video` and encoded with PyAV (no ffmpeg
    binary needed on the GPU machine).
    """
    av = pytest.importorskip("av")
    from mvaccel.data.synthetic import MOTIONS, SyntheticSpec, render_video

    videos, frames = _tree_spec()
    spec = SyntheticSpec(frames=frames, height=240, width=320)
    root = tmp_path_factory.mktemp("tree")
    classes = sorted(MOTIONS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k in range(videos):
            cls = classes[k % len(classes)]
            rgb = render_video(cls, spec, torch.Generator().manual_seed(k))
            path = root / cls / f"v_{cls}_g{k // len(classes) + 1:02d}_c01.avi"
            path.parent.mkdir(exist_ok=True)
            with av.open(str(path), "w") as c:
                s = c.add_stream("mpeg4", rate=25)
                s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
                s.options = {"qscale": "3"}
                for fr in rgb:
                    for pkt in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                        c.mux(pkt)
                for pkt in s.encode():
                    c.mux(pkt)
    finally:
        torch.set_num_threads(threads)
    return root


def _tree_cases():
    for device in ("cpu", "cuda"):
        mark = [pytest.mark.cuda] if device == "cuda" else []
        for preset in ["dense_flow", "fast"] if device == "cuda" else ["fast", "tvnet"]:
            for mode in ("sequential", "pipeline"):
                yield pytest.param(device, preset, mode, marks=mark,
                                   id=f"{device}-{preset}-{mode}")  # fmt: skip


@pytest.mark.parametrize("device,preset,mode", _tree_cases())
def test_flow_tree_videos_per_s(benchmark, video_tree, tmp_path, device, preset, mode):
    """``mvaccel flow TREE OUT`` (JPEG x/y): one video after the other vs the pipeline."""
    from mvaccel._io import find_videos
    from mvaccel.flow import flow_tree

    videos = find_videos(video_tree)
    cuda = device == "cuda"
    kw = dict(batch=256 if cuda else 16, decoders=4 if cuda else 2, writers=4 if cuda else 2)
    out = tmp_path / "out"
    cpu_s = []

    def run():
        c0 = time.process_time()
        r = flow_tree(video_tree, out, preset, device=device, overwrite=True, quiet=True,
                      pipeline=mode == "pipeline", **kw)  # fmt: skip
        cpu_s.append(time.process_time() - c0)
        assert r.ok and len(r.done) == len(videos), r.failed

    benchmark.group = f"mvaccel flow tree {device} {preset} {len(videos)} videos 320x240"
    if cuda:  # CUDA context and kernel load outside the timing (a whole warm-up run is minutes)
        x = torch.zeros(1, 1, 240, 320, device="cuda")
        tvl1(x, x, preset)
        torch.cuda.synchronize()
    benchmark.pedantic(run, rounds=1, iterations=1)
    pairs = sum(len(list(d.glob("flow_x_*.jpg"))) for d in out.glob("*/*"))
    benchmark.extra_info.update(pairs=pairs, videos=len(videos), cpu_s=cpu_s[-1])
    t = _median(benchmark)
    if t is not None:
        hours = UCF101_PAIRS / (pairs / t) / 3600
        ROWS.append(
            f"mvaccel flow tree {device} {preset:>10} {mode:>10} ({kw['batch']} pairs/call): "
            f"{len(videos) / t:.2f} videos/s, {pairs / t:.1f} pairs/s, wall {t:.1f} s, "
            f"CPU {cpu_s[-1]:.1f} s; UCF101 (2.5 M pairs) ~{hours:.1f} h"
        )
