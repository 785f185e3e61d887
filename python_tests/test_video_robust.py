"""The reader on bad input and in real pipelines: truncation and damage reported, per-frame
corruption flags, CompressedVideo's lifetime (close, with, fork/spawn/forkserver DataLoader
workers, pickling), and the backend recorded in every result (#13.6, #13.10, #12.2, #12.5).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import videogen as vg

import mvaccel.video as mv
from mvaccel.video import core

pytestmark = pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI")
needs_native = pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built")
NATIVE = pytest.param("native", marks=needs_native)
BACKENDS = [NATIVE, "pyav"]


def _ffmpeg(*args):
    subprocess.run([vg.FFMPEG, "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    src = ["-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-frames:v", "48"]
    x264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "2", "-g", "12"]
    _ffmpeg(*src, *x264, root / "v.mkv")
    _ffmpeg(*src, *x264, root / "v.mp4")
    _ffmpeg(*src, "-c:v", "mpeg4", root / "v.avi")
    # Big enough (~1 MB) that reads go to the file, not one buffered block: with a shared
    # file offset, concurrent readers then see each other's seeks.
    noise = ["-f", "lavfi", "-i", "nullsrc=size=320x240:rate=25,geq=random(1)*255:128:128"]
    _ffmpeg(*noise, "-frames:v", "36", *x264, "-b:v", "6M", root / "big.mp4")
    return root


# ---- truncated and damaged files ----


@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9, 0.98])
def test_truncated_mkv_raises(made, tmp_path, frac):
    data = (made / "v.mkv").read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(RuntimeError, match=r"cut.mkv: (the file is truncated|no video frame)"):
        mv.read_motion(path)
    with pytest.raises(RuntimeError, match=r"cut.mkv: "):
        mv.probe(path)


@needs_native
def test_intact_mkv_with_a_longer_audio_track_reads(made, tmp_path):
    path = tmp_path / "av.mkv"
    _ffmpeg("-i", made / "v.mkv", "-f", "lavfi", "-i", "sine=duration=3", "-c:v", "copy",
            "-c:a", "aac", path)  # fmt: skip
    assert len(mv.read_motion(path)) == 48 and len(mv.read_motion(made / "v.mkv")) == 48


@needs_native
def test_damaged_avi_chunk_header_is_not_called_truncation(made, tmp_path):
    data = bytearray((made / "v.avi").read_bytes())
    at = [i for i in range(len(data) - 4) if data[i : i + 4] == b"00dc"]
    data[at[len(at) // 2] : at[len(at) // 2] + 4] = b"xxxx"
    path = tmp_path / "flip.avi"
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"flip.avi: the file is damaged") as e:
        mv.read_motion(path)
    assert "truncated" not in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_raises_where_nothing_decodes(made, tmp_path, backend):
    data = (made / "v.mp4").read_bytes()
    path = tmp_path / "empty.mp4"
    path.write_bytes(data[:2000])  # the header, no frame
    with pytest.raises(RuntimeError, match="empty.mp4: "):
        mv.probe(path, backend=backend)
    with pytest.raises(RuntimeError, match="empty.mp4: "):
        mv.read_motion(path, backend=backend)


@needs_native
def test_bit_flips_are_flagged_per_frame(made, tmp_path):
    good = mv.read_motion(made / "v.mp4")
    assert good.corrupt.dtype == torch.bool and not good.corrupt.any()
    data = (made / "v.mp4").read_bytes()
    rng = random.Random(3)
    flagged = wrong = 0
    for k in range(12):
        b = bytearray(data)
        for _ in range(20):
            i = rng.randrange(3000, len(b) - 3000)
            b[i] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{k}.mp4"
        path.write_bytes(bytes(b))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                clip = mv.read_motion(path)
            except RuntimeError as e:
                assert str(path) in str(e)
                continue
        if clip.corrupt.any():
            assert any("damaged" in str(x.message) and str(path) in str(x.message) for x in w)
        flagged += int(clip.corrupt.sum())
        if len(clip) == len(good):
            wrong += int((clip.mv != good.mv).flatten(1).any(1).sum())
        # No flagged-clean frame carries a vector no encoder writes.
        ok = ~clip.corrupt
        assert clip.mv[ok][:, 0].abs().max() <= 128 + 64
    assert wrong > 0 and flagged > 0


def test_corrupt_flags_implausible_vectors():
    d = {"mv": np.zeros((3, 2, 2, 2), np.float32), "frame_index": np.arange(3)}
    d["mv"][1, 0, 0, 0] = 7589.0  # the 7589 px on a 340x256 frame
    d["mv"][2, 1, 1, 1] = -400.0  # beyond 256 + 64 rows
    d["decode_errors"] = np.asarray([1, 0, 0], np.uint8)
    assert core._corrupt(d, 256, 340).tolist() == [True, True, True]
    d["mv"][1:, 0] = 400.0  # within 340 + 64 columns
    d["mv"][1:, 1] = -300.0  # within 256 + 64 rows
    d["decode_errors"][:] = 0
    assert core._corrupt(d, 256, 340).tolist() == [False, False, False]


# ---- backend recorded ----


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_and_ffmpeg_recorded(made, backend, tmp_path):
    clip = mv.read_motion(made / "v.mp4", backend=backend)
    assert clip.backend == backend and clip.ffmpeg.startswith("libavcodec ")
    info = mv.probe(made / "v.mp4", backend=backend)
    assert (info.backend, info.ffmpeg) == (backend, clip.ffmpeg)
    assert info.key_frames == [0, 12, 24, 36]
    vid = mv.CompressedVideo(made / "v.mp4", backend=backend)
    g = vid.read_gop(1)
    assert (vid.backend_used, g.backend, g.ffmpeg) == (backend, backend, clip.ffmpeg)
    saved = np.load(clip.save(tmp_path / "c.npz"))
    assert str(saved["backend"]) == backend and str(saved["ffmpeg"]) == clip.ffmpeg


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_video_raises_video_error_on_both_backends(made, backend, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 16)
    cut = tmp_path / "cut.mp4"
    data = (made / "v.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert issubclass(mv.VideoError, RuntimeError)
    for p in (junk, cut):
        with pytest.raises(mv.VideoError, match=p.name):
            mv.read_motion(p, backend=backend)
    with pytest.raises(mv.VideoError, match="junk.mp4"):
        mv.probe(junk, backend=backend)
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        mv.read_motion(tmp_path / "nothing.mp4", backend=backend)


def test_video_error_without_the_native_reader(monkeypatch):
    def missing():
        raise ImportError("mvaccel._video not built")

    monkeypatch.setattr(core, "_native", missing)
    cls = core._video_error_class()
    assert cls.__name__ == "VideoError" and issubclass(cls, RuntimeError)


def test_motion_clip_save_is_atomic(made, tmp_path, monkeypatch):
    clip = mv.read_motion(made / "v.mp4", frames=range(4))
    dest = clip.save(tmp_path / "c.npz")
    before = dest.read_bytes()

    def dies_mid_write(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        clip.save(dest)
    # the old file is whole and no temporary is left behind
    assert dest.read_bytes() == before and sorted(tmp_path.iterdir()) == [dest]


def test_auto_fallback_to_pyav_warns_once(made, monkeypatch):
    def missing():
        raise ImportError("mvaccel._video not built")

    monkeypatch.setattr(core, "_native", missing)
    monkeypatch.setattr(core, "_FALLBACK_WARNED", False)
    with pytest.warns(RuntimeWarning, match="falls back to PyAV"):
        clip = mv.read_motion(made / "v.mp4")
    assert clip.backend == "pyav"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mv.read_motion(made / "v.mp4").backend == "pyav"


# ---- CompressedVideo's lifetime ----


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_and_context_manager(made, backend):
    with mv.CompressedVideo(made / "v.mp4", backend=backend) as vid:
        ref = vid.load(1, 3)
        assert not vid.closed
    assert vid.closed and vid._reader is None
    with pytest.raises(ValueError, match="v.mp4: I/O operation on a closed CompressedVideo"):
        vid.load(1, 3)
    vid.close()  # idempotent
    again = pickle.loads(pickle.dumps(mv.CompressedVideo(made / "v.mp4", backend=backend)))
    assert torch.equal(again.load(1, 3), ref)


@needs_native
def test_many_videos_hold_no_descriptors_after_close(made):
    import os

    def fds():
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    vids = [mv.CompressedVideo(made / "v.mp4") for _ in range(20)]
    assert fds() >= before + 20
    for v in vids:
        v.close()
    assert fds() <= before + 1


class _Loads(torch.utils.data.Dataset):
    def __init__(self, vid):
        self.vid = vid

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = i % self.vid.num_gops
        return self.vid.load(g, (3 * i) % self.vid.gop_length(g), "mv", block=8)


@needs_native
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_under_each_start_method(made, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    vid = mv.CompressedVideo(made / "big.mp4")
    ds = _Loads(vid)
    want = [ds[i] for i in range(len(ds))]  # the parent's reader is open and used
    dl = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context=method
    )
    got = list(dl)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), i
    assert torch.equal(vid.load(1, 2, "mv", block=8), want[1])  # the parent's still reads


FORK_AFTER_PYAV = """
import gc, sys, av, torch
import mvaccel.video as mv
mv.read_motion(sys.argv[1], backend="pyav")  # any mvaccel decode through PyAV
gc.disable()
with av.open(sys.argv[1]) as c:  # a frame and its scaler (swscale threads) left in a cycle
    for f in c.decode(video=0):
        junk = [f, f.reformat(format="rgb24", width=64, height=48)]
        junk.append(junk)
        break
del junk, f


class DS(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        gc.collect()  # the worker collects the cycle it inherited
        return i


print(list(torch.utils.data.DataLoader(DS(), num_workers=2, batch_size=None)))
"""


def test_forked_workers_never_free_pyav_garbage(made, tmp_path):
    """A DataLoader forked after PyAV decoding: FFmpeg objects with threads left in reference
    cycles used to be freed in the worker, where FFmpeg waits forever for threads that the fork
    did not copy (the test suite hung on it). mvaccel collects such garbage before a fork."""
    script = tmp_path / "fork_after_pyav.py"
    script.write_text(FORK_AFTER_PYAV)
    p = subprocess.run([sys.executable, str(script), str(made / "big.mp4")], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "[0, 1, 2, 3]"


# ---- both backends on codecs and streams the PyAV path used to mishandle (#13.7) ----


@pytest.fixture(scope="module")
def odd_streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd_streams")
    src = ["-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-frames:v", "12"]
    _ffmpeg(*src, "-c:v", "flv1", root / "v.flv")
    _ffmpeg(*src, "-c:v", "msmpeg4", root / "v.avi")
    # Metadata that is not UTF-8 (PyAV decoded it strictly): raw bytes on the command line.
    cmd = [vg.FFMPEG, "-loglevel", "error", "-y", *src, "-c:v", "mpeg2video"]
    meta = [b"-metadata:s:v:0", b"title=\xc3(", str(root / "meta.mkv").encode()]
    subprocess.run([a.encode() for a in cmd] + meta, check=True)
    # A mid-stream size change: two MPEG-TS segments of different sizes, concatenated.
    small, big = root / "a.ts", root / "b.ts"
    _ffmpeg(*src, "-c:v", "mpeg2video", small)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-frames:v", "12",
            "-c:v", "mpeg2video", big)  # fmt: skip
    (root / "resize.ts").write_bytes(small.read_bytes() + big.read_bytes())
    return root


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "codec"), [("v.flv", "flv1"), ("v.avi", "msmpeg4v3")])
def test_flv1_and_msmpeg4v3_read_on_both_backends(odd_streams, name, codec, backend):
    clip = mv.read_motion(odd_streams / name, backend=backend)
    assert len(clip) == 12 and clip.mask[1:].any()
    assert mv.probe(odd_streams / name, backend=backend).codec == codec


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_utf8_metadata_reads(odd_streams, backend):
    assert len(mv.read_motion(odd_streams / "meta.mkv", backend=backend)) == 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_change_raises(odd_streams, backend):
    with pytest.raises(RuntimeError, match=r"resize.ts: frame \d+ is 160x120, the stream 128x96"):
        mv.read_motion(odd_streams / "resize.ts", backend=backend)


def test_pyav_gop_load_is_bounded_by_the_gop(made, monkeypatch):
    """A late GOP's load keeps pixels and per-pixel motion of that GOP only (#13.7: one load
    of a 720p video took 13.8 GB), and stops at the first anchor after the frame."""
    from mvaccel.video import _pyav

    calls = []
    real = _pyav._pixel_motion
    monkeypatch.setattr(_pyav, "_pixel_motion", lambda *a: calls.append(1) or real(*a))
    vid = mv.CompressedVideo(made / "v.mp4", backend="pyav")
    g = vid.num_gops - 1
    ref = mv.read_motion(made / "v.mp4", accumulate=True, residual=True, backend="pyav")
    calls.clear()
    res = vid.load(g, 2, "residual")
    assert torch.equal(res, ref.residual[vid.gop_start(g) + 2])
    assert len(calls) <= vid.gop_length(g) + 1  # not the 48 frames of the video
