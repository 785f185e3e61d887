"""Motion-vector extraction: mvaccel's native reader against what a user would run instead.

Default sizes keep ``pytest bench --benchmark-disable`` quick (96 frames at 320x240);
``MVACCEL_BENCH_FULL=1`` benchmarks ~1125-frame videos at 320x240 and 640x480 (the UCF101
clip of ../shared/data looped, or ffmpeg's testsrc2 without it). Run the single-core groups
pinned (``taskset -c 0``); the ``parallel`` group needs two cores. See bench/RESULTS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import mvaccel.video as mv

FFMPEG = shutil.which("ffmpeg")
FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
LOOPS = 7 if FULL else 0  # 164 * 7 = 1148 frames asked; the looped timestamps leave ~1125
SIZES = [(320, 240), (640, 480)] if FULL else [(320, 240)]
CODECS = {
    "h264": ["-c:v", "libx264", "-preset", "fast", "-bf", "2", "-refs", "1", "-crf", "20"],
    "mpeg4": ["-c:v", "mpeg4", "-g", "12", "-bf", "0", "-q:v", "2"],
}
UCF = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
UCF = Path(os.environ.get("MVACCEL_SHARED_DATA", UCF.parent)) / "videos"
UCF = UCF / "v_ApplyEyeMakeup_g01_c01.avi"
CACHE = Path(tempfile.gettempdir()) / "mvaccel-bench-videos"
PAPER_FPS = 675.7  # Zhang et al.: MV + RGB extraction, 320x240, one CPU core

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI")


def _video(codec: str, size: tuple[int, int], extra: tuple[str, ...] = ()) -> Path:
    w, h = size
    n = 164 * LOOPS if LOOPS else 96
    tag = "".join(extra).replace("-", "_")
    path = CACHE / f"{codec}_{w}x{h}_{n}{tag}.{'mp4' if codec == 'h264' else 'avi'}"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    if UCF.exists():
        src = ["-stream_loop", str(max(LOOPS - 1, 0)), "-i", str(UCF)]
    else:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=25"]
    tmp = path.with_name(f".tmp_{path.name}")
    subprocess.run([FFMPEG, "-v", "error", "-y", *src, "-frames:v", str(n),
                    "-vf", f"scale={w}:{h}", "-pix_fmt", "yuv420p", "-an",
                    *CODECS[codec], *extra, str(tmp)], check=True)  # fmt: skip
    tmp.replace(path)
    return path


CASES = [(c, s) for s in SIZES for c in CODECS]
IDS = [f"{c}-{w}x{h}" for c, (w, h) in CASES]


def _pyav_grid(path: Path, block: int = 8) -> np.ndarray:
    """What a user writes with PyAV: side data per frame, rasterized with numpy."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        cc.options = {"flags2": "+export_mvs", "skip_loop_filter": "all", "skip_idct": "all"}
        cc.thread_count = 1
        hb, wb = -(-cc.height // block), -(-cc.width // block)
        out = []
        for frame in c.decode(s):
            g = np.zeros((2, hb, wb), np.float32)
            sd = frame.side_data.get("MOTION_VECTORS")
            if sd is not None:
                a = sd.to_ndarray()
                a = a[a["source"] < 0]
                scale = a["motion_scale"].astype(np.float32)
                v = np.stack([a["motion_x"] / scale, a["motion_y"] / scale])
                x0 = (a["dst_x"] - a["w"] // 2) // block
                y0 = (a["dst_y"] - a["h"] // 2) // block
                nx, ny = a["w"] // block, a["h"] // block
                for oy in range(int(ny.max(initial=1))):
                    for ox in range(int(nx.max(initial=1))):
                        k = (oy < ny) & (ox < nx) & (y0 + oy < hb) & (x0 + ox < wb)
                        g[:, y0[k] + oy, x0[k] + ox] = v[:, k]
            out.append(g)
    return np.stack(out)


def _mvextractor(path: Path) -> int:
    from mvextractor.videocap import VideoCap

    cap = VideoCap()
    cap.open(str(path))
    cap.set_decode_frames(False)  # its motion-vector-only mode
    n = 0
    while True:
        ok, _, mvs, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def _run(benchmark, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=3, iterations=1,
                              warmup_rounds=1)  # fmt: skip


def _mvaccel(path: Path):
    if not mv.native_available():
        pytest.skip("mvaccel._video not built")
    return len(mv.read_motion(path))


def _ffmpeg(path: Path):
    subprocess.run([FFMPEG, "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
                   check=True)  # fmt: skip


def _mve(path: Path):
    pytest.importorskip("mvextractor")
    return _mvextractor(path)


MV_ONLY = {
    "mvaccel": _mvaccel,  # dense 8x8 grid, MV-only fast path
    "ffmpeg -threads 1 full decode": _ffmpeg,
    "motion-vector-extractor MV-only": _mve,  # raw (N, 10) lists
    "PyAV loop + numpy grid": _pyav_grid,  # the same grid
}


@pytest.mark.parametrize("impl", list(MV_ONLY))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mv_only(benchmark, case, impl):
    path = _video(*case)
    benchmark.group = f"mv-only {IDS[CASES.index(case)]}"
    fn = MV_ONLY[impl]
    if impl != "ffmpeg -threads 1 full decode":
        fn(path)  # skips here, before timing, when the implementation is missing
    _run(benchmark, fn, path)
    benchmark.extra_info["frames"] = mv.probe(path, count_frames=False).num_frames


@pytest.mark.parametrize("impl", ["mvaccel rgb=iframes", "mvaccel rgb=all"])
@pytest.mark.parametrize("codec", list(CODECS))
def test_mv_residual_rgb(benchmark, codec, impl):
    """MV + residual + RGB at 320x240 on one core (Zhang et al.: 675.7 fps for MV + RGB)."""
    if not mv.native_available():
        pytest.skip("mvaccel._video not built")
    path = _video(codec, (320, 240))
    benchmark.group = f"mv+residual+rgb {codec}-320x240"
    rgb = impl.split("=")[1]
    clip = _run(benchmark, mv.read_motion, path, residual=True, rgb=rgb)
    benchmark.extra_info["frames"] = len(clip)
    benchmark.extra_info["paper_fps"] = PAPER_FPS


@pytest.mark.parametrize("impl", ["mvaccel 2 threads", "1 thread"])
@pytest.mark.parametrize("codec", list(CODECS))
def test_parallel_gops(benchmark, codec, impl):
    """One video, its GOPs decoded on two threads (needs two free cores): accumulated motion
    (CoViAR's per-pixel trace), 640x480. H.264 with a GOP of 48 (x264's default 250 leaves
    five GOPs, too few to balance two threads)."""
    if not mv.native_available():
        pytest.skip("mvaccel._video not built")
    extra = ("-g", "48") if codec == "h264" else ()
    path = _video(codec, SIZES[-1], extra)
    benchmark.group = f"parallel {codec}-{SIZES[-1][0]}x{SIZES[-1][1]} accumulated mv"
    threads = 2 if impl.startswith("mvaccel") else 1
    clip = _run(benchmark, mv.read_motion, path, accumulate=True, threads=threads)
    benchmark.extra_info["frames"] = len(clip)
