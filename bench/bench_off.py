"""OFF networks (Sun et al.) at inference, stage by stage, against TV-L1 flow + a flow CNN.

One test video is split into ``S`` segments (OFF's fixed interval, ``beta = S``). The stages:

- ``decode``: decoding the video's RGB frames (the same for every route);
- ``motion``: what each route computes before its network: nothing for RGB + OFF(RGB); Raw
  OFF (Sobel x, Sobel y, difference) of each segment's 6 frames for the Raw-OFF network; TV-L1
  flow of each segment's 5 frame pairs for the flow CNN (what a user would otherwise run: the
  TSN flow stream, 5 stacked fields; the paper's baseline, 14 fps);
- ``network``: BN-Inception alone (TSN RGB), BN-Inception + OFF sub-network (RGB + OFF(RGB),
  stage-3 network, fused scores), the Raw-OFF network (OFF(RawOFF)), the flow CNN
  (BN-Inception on 10 channels).

Every network sees ``S`` inputs (segments). Default sizes keep ``pytest bench
--benchmark-disable`` to seconds (128x128, S = 8, TV-L1 ``fast``); ``MVACCEL_BENCH_FULL=1``
gives the paper's test protocol (224x224, S = 25, TV-L1 ``dense_flow``: OpenCV CUDA's defaults
as TSN's dense_flow). CUDA rows run the networks in AMP (float16) and channels_last. Numbers:
bench/RESULTS.md (section "OFF networks").
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import encode_video, require_video_reader, timed

from mvaccel.flow import tvl1
from mvaccel.nn import RawOFF
from mvaccel.train import OFFNetwork, build_backbone

FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
SIZE = 224 if FULL else 128  # BN-Inception's Caffe pools fit multiples of 32
SEGMENTS = 25 if FULL else 8
FLOW_LEN = 5  # stacked flow fields of the TSN flow stream (and Raw-OFF pairs + 1 frames)
PRESET = "dense_flow" if FULL else "fast"
CLASSES = 101
ROUNDS = int(os.environ.get("MVACCEL_BENCH_ROUNDS", "3"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A synthetic H.264 video of ``SEGMENTS * (FLOW_LEN + 1)`` frames at ``SIZE``x``SIZE``
    (encoded by the ffmpeg CLI or PyAV; the decode benchmark skips without either)."""
    require_video_reader()
    path = tmp_path_factory.mktemp("off_bench") / "v_RotateCW_g01_c01.mp4"
    return encode_video(_rendered(), path, "h264")


def _rendered():
    """``(T, H, W, 3)`` uint8 frames of the synthetic RotateCW clip."""
    from mvaccel.data.synthetic import SyntheticSpec, render_video

    spec = SyntheticSpec(frames=SEGMENTS * (FLOW_LEN + 1), height=SIZE, width=SIZE)
    return render_video("RotateCW", spec, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def frames():
    """``(T, 3, H, W)`` float frames in [0, 1] of the clip, in memory (the networks' input
    needs no video file, so the GPU rows run on a machine without FFmpeg or PyAV)."""
    return torch.from_numpy(_rendered()).permute(0, 3, 1, 2).float() / 255


def _rgb_net(stage: int, raw: bool, channels_last: bool) -> OFFNetwork:
    torch.manual_seed(0)
    return OFFNetwork(stage=stage, backbone="bninception", num_classes=CLASSES,
                      in_channels=3 * (FLOW_LEN + 1) if raw else 3, off_mode="temporal" if raw
                      else "rgb", raw_off=raw, test_segments=SEGMENTS,
                      channels_last=channels_last).eval()  # fmt: skip


def _on(device: str, net: torch.nn.Module, x: torch.Tensor):
    """The network and input on ``device``; channels_last and AMP (float16) on CUDA."""
    net = net.to(device)
    x = x.to(device)
    if device == "cuda":
        net = net.to(memory_format=torch.channels_last)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with (
            torch.inference_mode(),
            torch.autocast(device, torch.float16, enabled=device == "cuda"),
        ):
            return net(x)

    return run


def test_decode(benchmark, video):
    from mvaccel.video import read_motion

    benchmark.group = f"OFF decode {SIZE}"
    clip = benchmark.pedantic(lambda: read_motion(video, rgb="all"), rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["frames"] = len(clip.rgb)


@pytest.mark.parametrize("route", ["raw_off", "tvl1"])
def test_motion(benchmark, route, frames, device):
    """Raw OFF of S x 6 frames against TV-L1 of S x 5 pairs (the flow stream's input)."""
    seg = frames[: SEGMENTS * (FLOW_LEN + 1)].view(SEGMENTS, FLOW_LEN + 1, *frames.shape[1:])
    seg = seg.to(device)
    benchmark.group = f"OFF motion {device} {SIZE} S={SEGMENTS}"
    benchmark.extra_info["pairs"] = SEGMENTS * FLOW_LEN
    if route == "raw_off":
        raw = RawOFF().to(device)
        fn = timed(lambda: raw(seg), device)
    else:
        a = seg[:, 1:].flatten(0, 1)  # tvl1(I_t, I_{t-1}): the vectors' direction
        b = seg[:, :-1].flatten(0, 1)
        fn = timed(lambda: tvl1(a, b, PRESET), device)
        benchmark.extra_info["preset"] = PRESET
    out = benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)
    shape = (SEGMENTS, FLOW_LEN, 9) if route == "raw_off" else (SEGMENTS * FLOW_LEN, 2)
    assert tuple(out.shape) == (*shape, SIZE, SIZE)
    assert torch.isfinite(out).all()


NETWORKS = ["tsn_rgb", "rgb_off", "raw_off", "flow_cnn"]


@pytest.mark.parametrize("name", NETWORKS)
def test_network(benchmark, name, device):
    """Scores of one video's S segments (stage-3 OFF networks give the fused score)."""
    g = torch.Generator().manual_seed(0)
    if name == "flow_cnn":
        net = build_backbone("bninception", CLASSES, 2 * FLOW_LEN).eval()
        x = torch.randn(SEGMENTS, 2 * FLOW_LEN, SIZE, SIZE, generator=g)
    else:
        raw = name == "raw_off"
        net = _rgb_net(1 if name == "tsn_rgb" else 3, raw, device == "cuda")
        c = 3 * (FLOW_LEN + 1) if raw else 3
        x = torch.randn(1, SEGMENTS, c, SIZE, SIZE, generator=g)
    benchmark.group = f"OFF network {device} {SIZE} S={SEGMENTS}"
    benchmark.extra_info["segments"] = SEGMENTS
    fn = timed(_on(device, net, x), device)
    out = benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1)
    assert out.shape[-1] == CLASSES and torch.isfinite(out.float()).all()
