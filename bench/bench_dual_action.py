"""Dual-action Stream inference: an RGB 3D CNN alone against the two-stream route it replaces.

Per stage, frames/s (``extra_info["frames_per_s"]``): decoding the RGB frames (mvaccel's native
reader), TV-L1 flow of the decoded frames (mvaccel's solver, the ``fast`` preset and the
paper's default ``opencv`` one), the student 3D CNN on an RGB clip, and the two 3D CNNs of the
two-stream route (flow + RGB). End to end per clip: decode + crop + student, against decode +
TV-L1 + crops + flow CNN + RGB CNN (what the Dual-action Stream avoids at test time).

Default sizes keep ``pytest bench --benchmark-disable`` quick: a 17-frame 160x120 video, a
1/4-width 3D ResNet-18 on 16x112x112 clips. ``MVACCEL_BENCH_FULL=1``: the paper's 3D
ResNet-101 on 16x112x112 clips from a 320x240 (UCF101-sized) video. On a GPU the networks run
under fp16 autocast in ``channels_last_3d``. Run (one thread, pinned):
``OMP_NUM_THREADS=1 taskset -c 0 python -m pytest bench/bench_dual_action.py --benchmark-only``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import encode_video, require_video_reader

from mvaccel.data import transforms as tf
from mvaccel.flow import flow_video
from mvaccel.nn.backbones import resnet3d
from mvaccel.train.modules import build_backbone
from mvaccel.video import read_motion

FFMPEG = shutil.which("ffmpeg")
FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
CLIP = 16  # frames per clip (the paper's 16f)
SIZE = 112  # crop side
VIDEO = (320, 240) if FULL else (160, 120)
NET = "resnet3d101" if FULL else "resnet3d18 x1/4"
PRESETS = ["fast", "opencv"] if FULL else ["fast"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ROUNDS = 3 if FULL else 5
CACHE = Path(tempfile.gettempdir()) / "mvaccel-bench-videos"
NUM_CLASSES = 101


@pytest.fixture(scope="module")
def video() -> Path:
    """A ``CLIP + 1``-frame H.264 video (testsrc2: moving patterns; without the ffmpeg CLI, a
    synthetic clip encoded with PyAV, and a skip when PyAV is missing too)."""
    w, h = VIDEO
    require_video_reader()
    path = CACHE / f"dual_action_{w}x{h}_{CLIP + 1}.mp4"
    if FFMPEG is None:
        from mvaccel.data.synthetic import SyntheticSpec, render_video

        spec = SyntheticSpec(frames=CLIP + 1, height=h, width=w)
        frames = render_video("MoveRight", spec, torch.Generator().manual_seed(0))
        synthetic = path.with_name(f"synthetic_{path.name}")
        return synthetic if synthetic.exists() else encode_video(frames, synthetic, "h264")
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp_{path.name}")
        subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={w}x{h}:rate=25", "-frames:v", str(CLIP + 1),
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "20", str(tmp)],
                       check=True)  # fmt: skip
        tmp.replace(path)
    return path


def _net(in_channels: int, device: str) -> torch.nn.Module:
    """A randomly initialised network whose BatchNorm statistics are those of a random clip.

    Untrained statistics (mean 0, variance 1) let activations grow or vanish through the
    blocks, and denormal floats slow CPU convolutions several times: not what a trained
    network computes.
    """
    torch.manual_seed(0)
    if FULL:
        net = build_backbone("resnet3d101", NUM_CLASSES, in_channels)
    else:
        net = resnet3d(18, 0.25, num_classes=NUM_CLASSES, in_channels=in_channels)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.randn(2, in_channels, CLIP, SIZE, SIZE))
    net = net.eval().to(device)
    if device == "cuda":
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def _run(net, x: torch.Tensor, device: str) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    amp = torch.autocast("cuda", torch.float16) if device == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        if device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        out = net(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return out


def _decode(video: Path) -> torch.Tensor:
    """``(T, 3, H, W)`` uint8 frames."""
    return read_motion(video, rgb="all").rgb


def _rgb_clip(frames: torch.Tensor) -> torch.Tensor:
    """The centre crop of the first ``CLIP`` frames as the network's ``(1, 3, K, S, S)``."""
    x = tf.center_crop(frames[:CLIP].float(), (min(frames.shape[-2:]),) * 2, "image")
    x = tf.resize(x, (SIZE, SIZE), "image")
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    return ((x / 255 - mean) / std).transpose(0, 1)[None]


def _flow_clip(flow: torch.Tensor) -> torch.Tensor:
    """``(K, 2, H, W)`` flow in pixels -> ``(1, 2, K, S, S)`` (resized with its values scaled)."""
    x = tf.center_crop(flow[:CLIP], (min(flow.shape[-2:]),) * 2, "motion")
    x = tf.resize(x, (SIZE, SIZE), "motion")
    return tf.normalize_motion(x, 20.0, 1.0).transpose(0, 1)[None]


def _flow(frames: torch.Tensor, preset: str, device: str) -> torch.Tensor:
    return flow_video(frames, preset, batch=CLIP, device=device, backward=True)


def _record(benchmark, frames: int) -> None:
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["frames_per_s"] = frames / benchmark.stats.stats.median


def test_decode_rgb(benchmark, video):
    benchmark.group = f"dual_action stage decode {VIDEO[0]}x{VIDEO[1]}"
    frames = benchmark.pedantic(_decode, args=(video,), rounds=ROUNDS, warmup_rounds=1)
    assert frames.shape[0] == CLIP + 1
    _record(benchmark, frames.shape[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", PRESETS)
def test_tvl1_flow(benchmark, video, preset, device):
    benchmark.group = f"dual_action stage flow {VIDEO[0]}x{VIDEO[1]} {device}"
    frames = _decode(video)
    flow = benchmark.pedantic(_flow, args=(frames, preset, device), rounds=ROUNDS if
                              preset == "fast" else 1, warmup_rounds=0)  # fmt: skip
    assert flow.shape == (CLIP, 2, VIDEO[1], VIDEO[0])
    _record(benchmark, CLIP)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("route", ["student_rgb", "two_stream"])
def test_network(benchmark, route, device):
    """The CNN stage: the Dual-action Stream alone against the flow and RGB 3D CNNs."""
    benchmark.group = f"dual_action stage network {NET} {CLIP}x{SIZE}x{SIZE} {device}"
    g = torch.Generator().manual_seed(0)
    rgb = torch.randn(1, 3, CLIP, SIZE, SIZE, generator=g)
    flow = torch.randn(1, 2, CLIP, SIZE, SIZE, generator=g)
    rgb_net = _net(3, device)
    if route == "student_rgb":
        fn = lambda: _run(rgb_net, rgb, device)  # noqa: E731
    else:
        flow_net = _net(2, device)
        fn = lambda: (_run(flow_net, flow, device), _run(rgb_net, rgb, device))  # noqa: E731
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, CLIP)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("route", ["student_rgb", "two_stream"])
def test_end_to_end(benchmark, video, route, device):
    """Video file -> scores of one clip, every stage in sequence (TV-L1 ``fast``)."""
    benchmark.group = f"dual_action end to end {NET} {VIDEO[0]}x{VIDEO[1]} {device}"
    rgb_net = _net(3, device)
    flow_net = _net(2, device) if route == "two_stream" else None

    def fn():
        frames = _decode(video)
        scores = _run(rgb_net, _rgb_clip(frames), device)
        if flow_net is not None:
            flow = _flow(frames, "fast", device).cpu()
            scores = scores + _run(flow_net, _flow_clip(flow), device)
        return scores

    out = benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)
    assert out.shape == (1, NUM_CLASSES) and torch.isfinite(out).all()
    _record(benchmark, CLIP)
