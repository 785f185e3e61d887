"""TVNet end to end at inference: frames/s per stage against decode + TV-L1 + flow CNN.

The workload is the paper's test input: a stack of 6 consecutive RGB frames (5 flow fields)
of a synthetic H.264 video (a textured object moving over a textured background). Stages:

- ``decode``: the 6 RGB frames from the video (mvaccel's reader vs PyAV);
- ``flow``: the 5 flow fields: TVNet-50 (``mvaccel.nn.TVNet``, fused op; the same module
  unrolled in plain PyTorch, what one writes without the op), and the TV-L1 a two-stream
  pipeline runs instead (``mvaccel.flow.tvl1`` presets ``tvnet``, ``fast``, ``opencv`` and
  OpenCV's ``DualTVL1`` with the ``opencv`` preset, where opencv-contrib is installed);
- ``classifier``: BN-Inception on the 10-channel flow stack;
- ``e2e``: all three in sequence: ``TVNetClassifier``'s pipeline (RGB in, scores out) against
  decode + TV-L1 + the same CNN.

Each benchmark records ``extra_info["frames"]`` (flow fields, i.e. frames, per call): frames/s
= frames / median. Default size 128x96 (``pytest bench --benchmark-disable`` takes seconds);
``MVACCEL_BENCH_FULL=1``: 224x224, the network's input (the paper computes TVNet on crops).
CUDA rows (TVNet and the classifier with AMP and channels_last) run where a GPU is.
Numbers: bench/RESULTS.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import encode_video, require_video_reader, timed

from mvaccel.data.synthetic import SyntheticSpec, render_video
from mvaccel.flow import TVL1Params, tvl1
from mvaccel.nn import TVNet
from mvaccel.nn.backbones import BNInception
from mvaccel.train.tvnet import TVNetPipeline, frame_pairs, rgb_stack_frames

FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
H, W = (224, 224) if FULL else (96, 128)
FRAMES = 6  # the paper's stack: 6 frames -> 5 flows
FIELDS = FRAMES - 1
BOUND, STD = 20.0, 1 / 255  # recipes/two_stream_flow.yaml's flow normalisation
ROUNDS = 3
CACHE = Path(tempfile.gettempdir()) / "mvaccel-bench-videos"


def _video() -> Path:
    require_video_reader()
    path = CACHE / f"tvnet_e2e_{W}x{H}_{FRAMES}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        spec = SyntheticSpec(frames=FRAMES, height=H, width=W)
        frames = render_video("MoveRight", spec, torch.Generator().manual_seed(0))
        encode_video(frames, path, "h264")
    return path


def _decode_mvaccel(path: Path) -> torch.Tensor:
    from mvaccel.video import read_motion

    return read_motion(path, rgb="all").rgb  # (T, 3, H, W) uint8


def _decode_pyav(path: Path) -> torch.Tensor:
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def clip():
    """The 6 decoded frames ``(6, 3, H, W)`` uint8 and the video."""
    path = _video()
    frames = _decode_mvaccel(path)
    assert frames.shape == (FRAMES, 3, H, W), frames.shape
    return path, frames


def _stack_input(frames: torch.Tensor) -> torch.Tensor:
    """``(6, 3, H, W)`` uint8 -> the data module's normalised RGB stack ``(1, 18, H, W)``."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((frames.float() / 255 - mean) / std).reshape(1, -1, H, W)


def _pairs(frames: torch.Tensor):
    """``(I_t, I_{t-1})`` uint8 pairs, ``(5, 3, H, W)`` each (the flow CNNs' direction)."""
    return frame_pairs(frames[None], "backward")


def _classifier(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return BNInception(num_classes=101, in_channels=2 * FIELDS).eval().to(device)


def _normalise(u: torch.Tensor) -> torch.Tensor:
    from mvaccel.data.transforms import normalize_motion

    return normalize_motion(u, BOUND, STD).reshape(1, 2 * FIELDS, *u.shape[-2:])


def _opencv_flow(p: TVL1Params):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "optflow"):
        pytest.skip("needs opencv-contrib-python(-headless) for DualTVL1")
    cv2.setNumThreads(torch.get_num_threads())

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        ga = (a.float() * w).sum(1).round().to(torch.uint8).numpy()
        gb = (b.float() * w).sum(1).round().to(torch.uint8).numpy()
        out = []
        for x, y in zip(ga, gb, strict=True):
            solver = cv2.optflow.DualTVL1OpticalFlow_create(
                tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps,
                epsilon=p.epsilon, innnerIterations=p.inner_iterations,
                outerIterations=p.outer_iterations, scaleStep=p.scale_step, gamma=0.0,
                medianFiltering=p.median,
            )  # fmt: skip
            out.append(torch.from_numpy(solver.calc(x, y, None)).permute(2, 0, 1))
        return torch.stack(out)

    return run


def _flow_fn(impl: str, device: str = "cpu"):
    """``fn(I0, I1) -> (N, 2, H, W)`` of each flow implementation."""
    if impl.startswith("mvaccel-tvnet50"):
        net = TVNet(iterations=50, fused=impl == "mvaccel-tvnet50").eval().to(device)

        def run(a, b):
            with torch.inference_mode():
                return net(a, b)

        return run
    if impl == "opencv-dualtvl1":
        return _opencv_flow(TVL1Params.preset("opencv"))
    preset = impl.removeprefix("tvl1-")
    return lambda a, b: tvl1(a, b, preset)


@pytest.mark.parametrize("impl", ["mvaccel", "pyav"])
def test_decode(benchmark, clip, impl):
    path, frames = clip
    if impl == "pyav":
        pytest.importorskip("av")
        ref = _decode_pyav(path)
        assert ref.shape == frames.shape and (ref.float() - frames.float()).abs().mean() < 2
    fn = _decode_mvaccel if impl == "mvaccel" else _decode_pyav
    benchmark.group = f"tvnet e2e: decode {FRAMES} frames {W}x{H}"
    benchmark.extra_info["frames"] = FRAMES
    benchmark.pedantic(lambda: fn(path), rounds=ROUNDS, iterations=1)


FLOWS = ["mvaccel-tvnet50", "mvaccel-tvnet50-unfused", "tvl1-tvnet", "tvl1-fast", "tvl1-opencv",
         "opencv-dualtvl1"]  # fmt: skip


@pytest.mark.parametrize("impl", FLOWS)
def test_flow(benchmark, clip, impl):
    a, b = _pairs(clip[1])
    fn = _flow_fn(impl)
    u = fn(a, b)
    assert u.shape == (FIELDS, 2, H, W) and torch.isfinite(u).all()
    benchmark.group = f"tvnet e2e: flow of {FIELDS} pairs {W}x{H} cpu"
    benchmark.extra_info["frames"] = FIELDS
    benchmark.pedantic(lambda: fn(a, b), rounds=ROUNDS, iterations=1)


@pytest.mark.cuda
@pytest.mark.parametrize("impl", ["mvaccel-tvnet50", "mvaccel-tvnet50-unfused", "tvl1-tvnet",
                                  "tvl1-fast"])  # fmt: skip
def test_flow_cuda(benchmark, clip, impl):
    a, b = (t.cuda() for t in _pairs(clip[1]))
    fn = _flow_fn(impl, "cuda")
    benchmark.group = f"tvnet e2e: flow of {FIELDS} pairs {W}x{H} cuda"
    benchmark.extra_info["frames"] = FIELDS
    benchmark.pedantic(timed(lambda: fn(a, b), "cuda"), rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["fp32", "amp-channels_last"])
def test_classifier(benchmark, device, mode):
    if device == "cpu" and mode != "fp32":
        pytest.skip("AMP and channels_last are the GPU settings")
    net = _classifier(device)
    x = torch.randn(1, 2 * FIELDS, H, W, device=device)
    if mode != "fp32":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast(device, enabled=mode != "fp32"):
            return net(x)

    benchmark.group = f"tvnet e2e: BN-Inception on a {FIELDS}-field stack {W}x{H} {device}"
    benchmark.extra_info["frames"] = FIELDS
    benchmark.pedantic(timed(run, device), rounds=ROUNDS, warmup_rounds=1)


E2E = ["mvaccel-tvnet50", "tvl1-fast", "tvl1-opencv", "opencv-dualtvl1"]


@pytest.mark.parametrize("impl", E2E)
def test_e2e(benchmark, clip, impl):
    """Decode, flow, CNN: TVNetClassifier's pipeline vs a two-stream temporal stream."""
    path, _ = clip
    net = _classifier("cpu")
    if impl == "mvaccel-tvnet50":
        pipe = TVNetPipeline(TVNet(iterations=50), net, BOUND, STD).eval()

        def run():
            x = _stack_input(_decode_mvaccel(path))
            with torch.inference_mode():
                return pipe(x)

        # The pipeline's flow is TVNet's of the decoded pairs, in the flow CNN's order.
        x = _stack_input(clip[1])
        with torch.inference_mode():
            _, _, u = pipe.flow(x)
            ref = TVNet(iterations=50)(*_pairs(rgb_stack_frames(x)[0]))
        assert (u - ref).abs().max() < 1e-4
    else:
        flow = _flow_fn(impl)

        def run():
            a, b = _pairs(_decode_mvaccel(path))
            u = flow(a, b)
            with torch.inference_mode():
                return net(_normalise(u))

    assert run().shape == (1, 101)
    benchmark.group = f"tvnet e2e: decode + flow + BN-Inception, {FIELDS} fields {W}x{H} cpu"
    benchmark.extra_info["frames"] = FIELDS
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
