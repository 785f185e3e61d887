"""Fuzzing the readers: seeded byte mutations of tiny videos through every reader API.

Each mutant (bits flipped, the file truncated, or a byte range zeroed) of an H.264 file with
B-frames and of an MPEG-4 AVI is read by a worker subprocess through probe, read_motion
(sequential, GOP-parallel, frames, residual, accumulation) and CompressedVideo (index, every
GOP, load), on both backends. The test asserts 0 crashes (a signal exit), 0 hangs (a mutant
past its time limit) and only the documented exceptions (RuntimeError, ValueError), each
naming the file. A worker that dies is restarted at the next mutant, so one crash is
reported with its mutant instead of ending the run.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import videogen as vg

import mvaccel.video as mv

pytestmark = pytest.mark.skipif(vg.FFMPEG is None, reason="needs the ffmpeg CLI")

MUTANTS_PER_VIDEO = 20
PER_MUTANT_S = 30.0  # generous on a loaded 2-core machine; a hang is minutes
DOCUMENTED = {"RuntimeError", "VideoError", "ValueError"}

WORKER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import mvaccel.video as mv

backend = sys.argv[1]


def attempt(out, name, fn):
    try:
        fn()
        out[name] = "ok"
    except Exception as e:  # the parent checks the type and the message
        out[name] = [type(e).__name__, str(e)]


def apis(path):
    out = {}
    attempt(out, "probe", lambda: mv.probe(path, backend=backend))
    attempt(out, "probe_packets", lambda: mv.probe(path, count_frames=False, backend=backend))
    attempt(out, "read", lambda: mv.read_motion(path, backend=backend))
    attempt(out, "read_threads", lambda: mv.read_motion(path, threads=2, residual=True,
                                                        backend=backend))
    attempt(out, "read_frames", lambda: mv.read_motion(path, frames=[0, 5, 9], block=16,
                                                       accumulate=True, rgb="iframes",
                                                       backend=backend))

    def gops():
        with mv.CompressedVideo(path, backend=backend) as vid:
            for g in range(vid.num_gops):
                vid.read_gop(g, residual=True, rgb="all")
                vid.load(g, vid.gop_length(g) - 1, "mv")
                vid.load(g, 0, "iframe")

    attempt(out, "gops", gops)
    return out


for line in sys.stdin:
    i, path = line.rstrip("\n").split("\t")
    print(json.dumps({"start": int(i)}), flush=True)
    print(json.dumps({"done": int(i), "apis": apis(path)}), flush=True)
"""


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "zero"])
    lo = min(64, len(b) // 4)  # mostly past the container header, sometimes in it
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            b[rng.randrange(lo, len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del b[rng.randrange(lo, len(b)) :]
    else:
        start = rng.randrange(lo, len(b))
        n = rng.randint(1, 512)
        b[start : start + n] = bytes(len(b[start : start + n]))
    return kind, bytes(b)


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    src = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "24"]
    seeds = {
        "h264_b.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "2", "-g", "8",
                       "-x264-params", "b-adapt=0"],
        "mpeg4_b.avi": ["-c:v", "mpeg4", "-bf", "2", "-g", "8"],
    }  # fmt: skip
    rng = random.Random(20261126)
    out = []
    for name, args in seeds.items():
        seed = root / name
        cmd = [vg.FFMPEG, "-loglevel", "error", "-y", *src, *args, str(seed)]
        subprocess.run(cmd, check=True)
        data = seed.read_bytes()
        for k in range(MUTANTS_PER_VIDEO):
            kind, b = _mutate(data, rng)
            path = root / f"{Path(name).stem}_{k:02d}_{kind}{Path(name).suffix}"
            path.write_bytes(b)
            out.append(str(path))
    return out


def _run(backend: str, paths: list[str]) -> dict:
    """Every mutant through a worker; returns per-mutant results, crashes and hangs."""
    env = dict(os.environ)
    root = str(Path(mv.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    results, crashes, hangs = {}, [], []
    todo = list(range(len(paths)))
    while todo:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        proc.stdin.write("".join(f"{i}\t{paths[i]}\n" for i in todo))
        proc.stdin.close()
        current, deadline = None, time.monotonic() + 120.0  # the first start imports torch
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:  # the worker ended
                    proc.wait()
                    if proc.returncode != 0 and current is not None:
                        crashes.append((paths[current], proc.returncode))
                        todo = todo[todo.index(current) + 1 :]
                    else:
                        todo = []
                    break
                msg = json.loads(line)
                if "start" in msg:
                    current, deadline = msg["start"], time.monotonic() + PER_MUTANT_S
                else:
                    results[msg["done"]] = msg["apis"]
                    current = None
            elif time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                if current is None:  # stuck before the first mutant: report and stop
                    hangs.append(("<worker start>", backend))
                    todo = []
                else:
                    hangs.append((paths[current], backend))
                    todo = todo[todo.index(current) + 1 :]
                break
    return {"results": results, "crashes": crashes, "hangs": hangs}


NATIVE = pytest.param(
    "native",
    marks=pytest.mark.skipif(not mv.native_available(), reason="mvaccel._video not built"),
)


@pytest.mark.parametrize("backend", [NATIVE, "pyav"])
def test_mutated_videos_never_crash_hang_or_raise_undocumented(mutants, backend):
    run = _run(backend, mutants)
    assert run["crashes"] == [], run["crashes"]
    assert run["hangs"] == [], run["hangs"]
    assert len(run["results"]) == len(mutants)
    bad, raised = [], 0
    for i, apis in run["results"].items():
        path = mutants[i]
        for api, r in apis.items():
            if r == "ok":
                continue
            raised += 1
            kind, message = r
            if kind not in DOCUMENTED or path not in message:
                bad.append((Path(path).name, api, kind, message[:200]))
    assert not bad, bad
    assert raised > 0  # the mutations do damage: the test exercises the error paths
