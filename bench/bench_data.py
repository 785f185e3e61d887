"""Training samples: decode only what a sample needs vs the whole video, and decord.

One TSN training sample (3 segments of 5 frames, random crop to 224, the keys a DataLoader
gives) of motion vectors, motion vectors + residuals, or RGB, read by:

- ``mvaccel``: :class:`mvaccel.data.VideoDataset` (the GOPs holding the sample's frames);
- ``whole video``: the same dataset decoding the whole video for every sample (what it did
  before issue #12, and what ``cache=True`` does on a video's first visit);
- ``decord``: ``decord.VideoReader(...).get_batch(frames)`` for the RGB frames of the same
  positions, decode only (where decord imports); ``mvaccel frames`` is its counterpart.

Default sizes keep ``pytest bench --benchmark-disable`` quick (320x180, 48 frames);
``MVACCEL_BENCH_FULL=1`` uses ~10 s 720p videos (250 frames at 25 fps, H.264 with B-frames:
GOPs of 12, and x264's default GOP of 250). ``python bench/bench_data.py`` prints the table
of bench/RESULTS.md: every case in a fresh single-threaded process, median wall and CPU time
per sample and the peak resident memory a sample adds (``ru_maxrss`` after the first sample
and after all of them, minus before the first).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

FFMPEG = shutil.which("ffmpeg")
FULL = os.environ.get("MVACCEL_BENCH_FULL") == "1"
WIDTH, HEIGHT, FRAMES = (1280, 720, 250) if FULL else (320, 180, 48)
_X264 = ["-c:v", "libx264", "-preset", "fast", "-crf", "20", "-bf", "2", "-refs", "1"]
GOPS = {
    "gop12": [
        *_X264,
        "-g",
        "12",
        "-keyint_min",
        "12",
        "-sc_threshold",
        "0",
        "-x264-params",
        "open-gop=0:b-pyramid=none",
    ],  # fmt: skip
    "x264 default GOP": _X264,
}
if not FULL:
    GOPS = {"gop12": GOPS["gop12"]}
UCF = Path(os.environ.get("MVACCEL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared"
                          / "data")) / "videos" / "v_ApplyEyeMakeup_g01_c01.avi"  # fmt: skip
CACHE = Path(tempfile.gettempdir()) / "mvaccel-bench-videos"
MODALITIES = {"mv": ("mv",), "mv+residual": ("mv", "residual"), "rgb": ("rgb",)}
CASES = [(m, impl) for m in MODALITIES for impl in ("mvaccel", "whole video")]
CASES += [("rgb frames", "mvaccel frames"), ("rgb frames", "decord")]
ROUNDS = 5 if FULL else 3

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI")


def make_video(gop: str) -> Path:
    """The benchmark's video (the UCF101 clip of ../shared/data, looped and scaled; or
    ffmpeg's testsrc2), cached under the temp folder."""
    tag = gop.replace(" ", "_")
    path = CACHE / f"data_{WIDTH}x{HEIGHT}_{FRAMES}_{tag}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    if UCF.exists():
        src = ["-stream_loop", "-1", "-i", str(UCF)]
    else:
        src = ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate=25"]
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    subprocess.run([FFMPEG, "-v", "error", "-y", *src, "-frames:v", str(FRAMES), "-r", "25",
                    "-vf", f"scale={WIDTH}:{HEIGHT}", "-pix_fmt", "yuv420p", "-an",
                    *GOPS[gop], "-threads", "2", str(tmp)], check=True)  # fmt: skip
    tmp.replace(path)
    return path


def sampler(video: Path, modality: str, impl: str):
    """A callable that returns the next training sample (keys ``(0, 0), (0, 1), ...``)."""
    from mvaccel.data.datasets import VideoDataset
    from mvaccel.data.lists import VideoItem

    mods = MODALITIES.get(modality, ("rgb",))
    kw = dict(num_segments=3, new_length=5, size=224)
    ds = VideoDataset([VideoItem(video.name, 0)], video.parent, mods, cache=impl == "whole video",
                      **kw)  # fmt: skip
    epoch = iter(range(10**9))

    def frames(e: int) -> list[int]:
        rng = np.random.default_rng([ds.seed, e, 0])
        return [f for seg in ds.frames(ds.video(0), rng) for f in seg]

    if impl == "mvaccel":
        return lambda: ds[(0, next(epoch))]
    if impl == "whole video":

        def whole():
            ds._videos.clear()  # decode the whole video again, as every sample did
            return ds[(0, next(epoch))]

        return whole
    if impl == "mvaccel frames":
        return lambda: ds.video(0).rgb(frames(next(epoch)))
    import decord

    def with_decord():
        reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
        return reader.get_batch(frames(next(epoch))).asnumpy()

    return with_decord


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(video: Path, modality: str, impl: str, n: int) -> dict:
    """Run ``n`` samples here (call in a fresh process): times and the memory they add."""
    import torch

    torch.set_num_threads(1)
    fn = sampler(video, modality, impl)
    gc.collect()
    base = _maxrss_mb()
    wall, cpu = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        if i == 0:
            first = _maxrss_mb() - base
    return {
        "wall_ms": 1000 * statistics.median(wall),
        "cpu_ms": 1000 * statistics.median(cpu),
        "peak_first_mb": first,
        "peak_mb": _maxrss_mb() - base,
        "samples": n,
    }


def measure_in_subprocess(video: Path, modality: str, impl: str, n: int) -> dict:
    """:func:`measure` in a fresh single-threaded Python process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    here = Path(__file__).resolve()
    env["PYTHONPATH"] = os.pathsep.join([str(here.parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, str(here), "--measure", str(video), modality, impl,
                          str(n)], check=True, capture_output=True, text=True, env=env)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _decord_missing() -> str | None:
    try:
        import decord  # noqa: F401
    except Exception as e:  # ImportError, or a broken binary wheel
        return f"decord does not import here: {e}"
    return None


@pytest.mark.parametrize("gop", list(GOPS))
@pytest.mark.parametrize(("modality", "impl"), CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_sample(benchmark, gop, modality, impl):
    if impl == "decord" and _decord_missing():
        pytest.skip(_decord_missing())
    video = make_video(gop)
    benchmark.group = f"{modality} sample {WIDTH}x{HEIGHT} {gop}"
    benchmark.name = impl
    benchmark.extra_info["impl"] = impl
    fn = sampler(video, modality, impl)
    if not benchmark.disabled:
        benchmark.extra_info.update(measure_in_subprocess(video, modality, impl, ROUNDS))
    out = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)
    if modality == "rgb frames":
        assert tuple(out.shape) in ((15, 3, HEIGHT, WIDTH), (15, HEIGHT, WIDTH, 3))
    else:
        assert out[0].shape == (3, 5 * (3 if modality == "rgb" else 2), 224, 224)


def table() -> str:
    """Every case in a fresh process, as the Markdown table of bench/RESULTS.md."""
    rows = ["| video | sample | implementation | wall (ms) | CPU (ms) | ratio (CPU) "
            "| peak, 1st sample (MB) | peak, all (MB) |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for gop in GOPS:
        video = make_video(gop)
        for modality in [*MODALITIES, "rgb frames"]:
            base = None
            for m, impl in CASES:
                if m != modality or (impl == "decord" and _decord_missing()):
                    continue
                r = measure_in_subprocess(video, modality, impl, ROUNDS)
                base = base or r["cpu_ms"]
                rows.append(
                    f"| {WIDTH}x{HEIGHT} {FRAMES} fr, {gop} | {modality} | {impl} "
                    f"| {r['wall_ms']:.0f} | {r['cpu_ms']:.0f} | {r['cpu_ms'] / base:.2f} "
                    f"| {r['peak_first_mb']:.0f} | {r['peak_mb']:.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    if _decord_missing():
        rows.append(f"\n{_decord_missing()}")
    return "\n".join(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        path, modality, impl, n = sys.argv[2:6]
        print(json.dumps(measure(Path(path), modality, impl, int(n))))
    else:
        print(table())
