"""Shared bench fixtures: devices (CUDA only where the build and machine have it), sync, and
test videos made without the ffmpeg CLI (a GPU machine need not have it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mvaccel._ext import cuda_ops_ready

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if cuda_ops_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA build of mvaccel and a GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def timed(fn, device: str):
    """Wrap ``fn`` so a timed call includes the GPU work (synchronize inside the callable)."""
    if device != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _have_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def require_video_reader() -> None:
    """Skip the calling test when no video reader exists (mvaccel._video or PyAV)."""
    from mvaccel.video.core import native_available

    if not native_available() and not _have_pyav():
        pytest.skip("reads a video: needs mvaccel._video (FFmpeg libraries) or PyAV (av)")


def encode_video(frames: np.ndarray, path: str | Path, codec: str = "h264", fps: int = 25) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames to ``path`` with the ffmpeg CLI where it exists,
    else with PyAV (the settings of :data:`mvaccel.data.synthetic.CODECS`: H.264 CRF 18 GOP 12
    without B-frames, or MPEG-4 Part 2 at quantiser 2 GOP 12); skips the test when neither.

    Written atomically (a temporary name, then renamed): a present file is whole.
    """
    from mvaccel.data.synthetic import encode

    path = Path(path)
    if shutil.which("ffmpeg"):
        return encode(frames, path, codec, fps)
    if not _have_pyav():
        pytest.skip("makes a test video: needs the ffmpeg CLI or PyAV (av)")
    import av

    t, h, w, _ = frames.shape
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as out:
        if codec == "h264":
            s = out.add_stream("libx264", rate=fps)
            s.options = {"preset": "veryfast", "crf": "18", "x264-params": "ref=1:bframes=0"}
        elif codec == "mpeg4":
            s = out.add_stream("mpeg4", rate=fps)
            s.options = {"qmin": "2", "qmax": "2"}
            s.codec_context.max_b_frames = 0
        else:
            raise ValueError(f"codec must be 'h264' or 'mpeg4', got {codec!r}")
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 12
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(s.encode())
    os.replace(tmp, path)
    return path
