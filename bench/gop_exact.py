"""Time the reader's sequential reads and GOP loads (bench/RESULTS.md, *Exact GOP reads*).

Run it with PYTHONPATH pointing at the tree to measure (before and after a change, alternately):

    PYTHONPATH=. python bench/gop_exact.py UCF.avi H264.mp4 MPEG4_NO_B.mp4 MPEG4_B.mp4
"""

from __future__ import annotations

import argparse
import time
import warnings

import mvaccel.video as mv


def best(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ucf", help="a one-GOP video for read_motion")
    ap.add_argument("h264", help="a multi-GOP H.264 video for threads=1/2")
    ap.add_argument("gops", nargs="+", help="videos whose every GOP is loaded")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    r = {
        "read_motion ucf": best(lambda: mv.read_motion(a.ucf), 5),
        "read_motion h264 t1": best(lambda: mv.read_motion(a.h264), 3),
        "read_motion h264 t2": best(lambda: mv.read_motion(a.h264, threads=2), 3),
    }
    for path in a.gops:
        vid = mv.CompressedVideo(path)

        def loads(vid=vid):
            for g in range(vid.num_gops):
                vid.load(g, min(5, vid.gop_length(g) - 1), "mv")

        r[f"load x{vid.num_gops} {path}"] = best(loads, 3)
    for k, v in r.items():
        print(f"{k}: {v:.1f} ms")


if __name__ == "__main__":
    main()
