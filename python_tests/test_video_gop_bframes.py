"""GOP reads of multi-GOP B-frame streams equal the sequential read, frame by frame (#13.1).

Every stream here has B-frames and several GOPs: MPEG-4 ASP closed and open GOP, H.264 open
GOP and B-pyramids, MPEG-2, and MPEG-4 in AVI (no timestamps). ``CompressedVideo.read_gop`` /
``load`` and ``read_motion(threads=4)`` must give exactly what ``read_motion(threads=1)`` gives
(a decode from the start of the file), or raise where a GOP cannot be placed exactly.
"""

from __future__ import annotations

import subprocess

import pytest
import torch
import videogen as vg

import mvaccel.video as mv

pytestmark = pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI")
needs_native = pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built")
NATIVE = pytest.param("native", marks=needs_native)

# The repro: content moving 1.2 px per frame, 40 frames, GOPs of 12 (10 when closed).
_SRC = ["-f", "lavfi", "-i", "testsrc2=size=400x96:rate=25", "-vf", "crop=128:96:t*30:0"]
_X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "12"]
STREAMS = {
    "mpeg4_closed.mp4": ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-flags", "+cgop"],
    "mpeg4_open.mp4": ["-c:v", "mpeg4", "-bf", "2", "-g", "12"],
    "mpeg4_closed.avi": ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-flags", "+cgop"],
    "mpeg2.mp4": ["-c:v", "mpeg2video", "-bf", "2", "-g", "12"],
    "h264_open.mp4": [*_X264, "-bf", "2", "-x264-params", "scenecut=0:b-adapt=0:open-gop=1"],
    "h264_pyramid.mp4": [*_X264, "-bf", "3", "-x264-params", "scenecut=0:b-adapt=0:b-pyramid=2"],
}
NO_SCENECUT = ["-sc_threshold", "1000000000"]


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("bframe_gops")
    out = {}
    for name, args in STREAMS.items():
        path = root / name
        extra = [] if "libx264" in args else NO_SCENECUT
        cmd = [vg.FFMPEG, "-loglevel", "error", "-y", *_SRC, "-frames:v", "40", *args, *extra]
        subprocess.run([*cmd, str(path)], check=True)
        out[name] = path
    return out


def _check_structure(path):
    info = mv.probe(path)
    assert info.num_frames == 40 and info.has_b_frames and info.num_gops >= 3, info
    return info


@pytest.mark.parametrize("backend", [NATIVE, "pyav"])
@pytest.mark.parametrize("name", list(STREAMS))
def test_read_gop_equals_the_sequential_read(streams, name, backend):
    path = streams[name]
    info = _check_structure(path)
    vid = mv.CompressedVideo(path, backend=backend)
    # GOPs start at the I-frames in display order.
    starts = [i for i, t in enumerate(info.frame_types) if t == 0]
    assert [vid.gop_start(g) for g in range(vid.num_gops)] == starts
    seq = mv.read_motion(path, fill_iframe="zero", residual=True, rgb="all", backend=backend)
    acc = mv.read_motion(path, accumulate=True, residual=True, backend=backend)
    for g in reversed(range(vid.num_gops)):  # out of order: every read seeks
        part = slice(vid.gop_start(g), vid.gop_start(g) + vid.gop_length(g))
        clip = vid.read_gop(g, fill_iframe="zero", residual=True, rgb="all")
        for f in ("mv", "mask", "frame_type", "pts", "frame_index", "residual", "rgb"):
            bad = [int(seq.frame_index[part][i]) for i in range(len(clip))
                   if not torch.equal(getattr(clip, f)[i], getattr(seq, f)[part][i])]  # fmt: skip
            assert not bad, f"{name} GOP {g}: {f} differs on frames {bad}"
        ca = vid.read_gop(g, accumulate=True, residual=True)
        assert torch.equal(ca.mv, acc.mv[part]), (name, g)
        assert torch.equal(ca.residual, acc.residual[part]), (name, g)


@needs_native
@pytest.mark.parametrize("name", ["mpeg4_closed.mp4", "mpeg4_open.mp4", "h264_open.mp4"])
def test_load_equals_the_sequential_read_on_every_frame(streams, name):
    path = streams[name]
    vid = mv.CompressedVideo(path)
    acc = mv.read_motion(path, accumulate=True, block=1)
    own = mv.read_motion(path, fill_iframe="zero", block=1)
    for t in range(vid.num_frames):
        g, f = vid.gop_of_frame(t)
        assert torch.equal(vid.load(g, f, "mv"), acc.mv[t]), (name, t)
        assert torch.equal(vid.load(g, f, "mv", accumulate=False), own.mv[t]), (name, t)


@needs_native
@pytest.mark.parametrize("name", list(STREAMS))
def test_threads_give_the_one_thread_result(streams, name):
    path = streams[name]
    for kw in ({}, {"residual": True}, {"accumulate": True}, {"frames": [39, 11, 12, 23]}):
        one = mv.read_motion(path, threads=1, **kw)
        four = mv.read_motion(path, threads=4, **kw)
        bad = [t for t in range(len(one)) if not torch.equal(one.mv[t], four.mv[t])]
        assert not bad, f"{name} {kw}: threads=4 differs on frames {bad}"
        assert torch.equal(one.frame_type, four.frame_type)
        if kw.get("residual"):
            assert torch.equal(one.residual, four.residual)


@needs_native
def test_open_gop_without_timestamps_raises_instead_of_shifting(tmp_path):
    # MPEG-4 open GOPs in AVI: no timestamps say where the leading B-frames are shown.
    path = tmp_path / "open.avi"
    cmd = [vg.FFMPEG, "-loglevel", "error", "-y", *_SRC, "-frames:v", "40"]
    subprocess.run([*cmd, *STREAMS["mpeg4_open.mp4"], *NO_SCENECUT, str(path)], check=True)
    vid = mv.CompressedVideo(path)
    seq = mv.read_motion(path, fill_iframe="zero")
    assert torch.equal(vid.read_gop(0).mv[1:], seq.mv[1 : vid.gop_length(0)])
    with pytest.raises(RuntimeError, match=r"open.avi: GOP 1 cannot be read on its own"):
        vid.read_gop(1)
    assert torch.equal(mv.read_motion(path, threads=4).mv, mv.read_motion(path).mv)
    # Reads that stop inside a GOP: the decoder drops the leading B-frames of the GOP it starts
    # from, which shifted every frame number after them (frame 24's picture given as 22's,
    # silently). Every such read now equals the sequential one or raises.
    rgb = mv.read_motion(path, rgb="all", residual=True)
    refused = []
    for g in range(vid.num_gops):
        for f in range(vid.gop_length(g)):
            try:
                clip = vid.read_gop(g, frames=[f], rgb="all", residual=True)
            except RuntimeError as e:
                assert "cannot be read on its own" in str(e)
                refused.append((g, f))
                continue
            t = vid.gop_start(g) + f
            assert torch.equal(clip.rgb[0], rgb.rgb[t]), (g, f)
            assert torch.equal(clip.residual[0], rgb.residual[t]), (g, f)
    assert (2, 0) in refused and all(g > 0 for g, _ in refused)
