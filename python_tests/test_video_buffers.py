"""The native reader's pixel buffers.

Residuals are written straight into the rows of the block handed to numpy where a read's frames
are known ahead (sorted, distinct); other reads copy them out of per-frame blocks. The opt-in
block cache (``MVACCEL_READER_CACHE_MB``) reuses freed blocks across reads. Neither may change a
value: both are checked against the plain path and across processes (fork).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import videogen as vg

import mvaccel.video as mv

pytestmark = [
    pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built"),
    pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI to make test videos"),
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """320x240 H.264 with B-frames, GOPs of 8: a residual row is 450 KiB (cached sizes)."""
    path = tmp_path_factory.mktemp("buffers") / "wide_b.mp4"
    args = [*vg.X264_B, "-g", "8", "-keyint_min", "8", "-sc_threshold", "0"]
    return vg.encode(vg.texture(240, 320, 33, 1.5, -0.75), path, args)


@pytest.mark.parametrize("name", ["h264_b.mp4", "mpeg4.avi"])
def test_residual_rows_in_place_equal_copied(tmp_path_factory, name):
    videos = vg.make_videos(tmp_path_factory.getbasetemp() / "videos")
    path = videos[name]
    whole = mv.read_motion(path, residual=True, rgb="all")
    cv = mv.CompressedVideo(path)
    for g in range(cv.num_gops):
        n = cv.gop_length(g)
        start = cv.gop_start(g)
        sorted_frames = list(range(1, n, 2)) or [0]  # in place (sorted, distinct)
        shuffled = [*sorted_frames[::-1], sorted_frames[0]]  # copied (order, repeats)
        a = cv.read_gop(g, frames=sorted_frames, residual=True, rgb="all")
        b = cv.read_gop(g, frames=shuffled, residual=True, rgb="all")
        for clip, frames in ((a, sorted_frames), (b, shuffled)):
            rows = [start + f for f in frames]
            assert clip.frame_index.tolist() == rows
            assert np.array_equal(clip.residual.numpy(), whole.residual[rows].numpy())
            assert np.array_equal(clip.rgb.numpy(), whole.rgb[rows].numpy())
    # a read from the file start with frames asked (rows in place) and without (every frame)
    some = [2, 5, 6, 11]
    assert np.array_equal(mv.read_motion(path, residual=True, frames=some).residual.numpy(),
                          whole.residual[some].numpy())  # fmt: skip


_CHILD = """
import json, os, sys
import numpy as np
from mvaccel.video import CompressedVideo
from mvaccel.video.core import _native

path = sys.argv[1]
cv = CompressedVideo(path)
first = [cv.read_gop(g, frames=[1, 2, 3, 4], residual=True).residual.numpy()
         for g in range(cv.num_gops - 1)]
same = True
for _ in range(3):
    for g, ref in enumerate(first):
        same &= np.array_equal(cv.read_gop(g, frames=[1, 2, 3, 4], residual=True)
                               .residual.numpy(), ref)
stats = _native().buffer_cache()
pid = os.fork()
if pid == 0:  # a forked child reads through the inherited cache and lock
    ok = all(np.array_equal(cv.read_gop(g, frames=[1, 2, 3, 4], residual=True).residual.numpy(),
                            ref) for g, ref in enumerate(first))
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
cleared = _native().buffer_cache(clear=True)
print(json.dumps({"same": bool(same), "stats": stats, "child": os.waitstatus_to_exitcode(status),
                  "cleared": cleared}))
"""


def _run_child(path: Path, cache_mb: str | None) -> dict:
    path_var = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path_var)
    env.pop("MVACCEL_READER_CACHE_MB", None)
    if cache_mb is not None:
        env["MVACCEL_READER_CACHE_MB"] = cache_mb
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), str(path)], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_block_cache_reuses_blocks_and_changes_nothing(wide):
    r = _run_child(wide, "64")
    assert r["same"] and r["child"] == 0
    s = r["stats"]
    assert s["limit"] == 64 << 20
    assert s["hits"] > 0  # later reads took blocks the earlier ones freed
    assert 0 < s["held"] <= s["limit"]
    assert r["cleared"]["held"] == 0


def test_block_cache_off_by_default_and_bounded(wide):
    r = _run_child(wide, None)
    assert r["same"] and r["child"] == 0
    assert r["stats"]["limit"] == 0 and r["stats"]["held"] == 0 and r["stats"]["hits"] == 0
    tiny = _run_child(wide, "1")  # smaller than one GOP's residual block: nothing kept
    assert tiny["same"] and tiny["child"] == 0
    assert tiny["stats"]["held"] <= 1 << 20
