"""``mvaccel prepare``: re-encode a dataset tree to the compressed-domain format."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; environment ranks when ``spec`` is "auto"."""
    if spec == "auto":
        i, n = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    else:
        try:
            a, b = spec.split("/")
            i, n = int(a), int(b)
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {i}/{n}: need 0 <= i < n")
    return i, n


def plan(src: Path, out: Path, shard: tuple[int, int], suffix: str) -> list[tuple[Path, Path]]:
    """The (source, output) pairs of this shard, sorted, mirroring the source tree."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    i, n = shard
    return [(p, (out / p.relative_to(src)).with_suffix(suffix)) for p in files[i::n]]


def _run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from ..video import reencode

    src, out = Path(args.src_dir), Path(args.out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    if args.reencode is None:
        raise ValueError("nothing to do: give --reencode mpeg4 (CoViAR) or --reencode h264")
    w, h = (int(v) for v in args.size.lower().split("x"))
    jobs = plan(src, out, parse_shard(args.shard), args.suffix)
    todo = [(s, d) for s, d in jobs if not d.exists()]
    print(f"{len(jobs)} videos in shard {args.shard}: {len(jobs) - len(todo)} done, "
          f"{len(todo)} to encode with {args.workers} workers")  # fmt: skip
    failed = []

    def one(pair):
        s, d = pair
        reencode(s, d, codec=args.reencode, size=(w, h), gop=args.gop, bframes=args.bframes,
                 qscale=args.qscale, crf=args.crf, threads=1)  # fmt: skip
        return d

    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        futures = {pool.submit(one, p): p for p in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), unit="video", disable=None):
            try:
                fut.result()
            except (RuntimeError, OSError, ValueError) as e:
                failed.append((futures[fut][0], str(e)))
    for s, msg in failed:
        print(f"failed: {s}: {msg}")
    print(f"{len(todo) - len(failed)} encoded, {len(failed)} failed -> {out}")
    return 1 if failed else 0


def register(sub) -> None:
    """Add ``prepare`` to the CLI."""
    p = sub.add_parser(
        "prepare",
        help="re-encode a dataset tree for compressed-domain training (resumable, sharded)",
    )
    p.add_argument("src_dir", help="folder of videos (searched recursively)")
    p.add_argument("out_dir", help="output folder; the tree is mirrored")
    p.add_argument("--reencode", choices=("mpeg4", "h264"), help="target codec (CoViAR: mpeg4)")
    p.add_argument("--size", default="340x256", help="WIDTHxHEIGHT (340x256)")
    p.add_argument("--gop", type=int, default=12, help="GOP length (12)")
    p.add_argument("--bframes", type=int, default=0, help="B-frames (0)")
    p.add_argument("--qscale", type=int, default=1, help="MPEG-4 quantizer (1)")
    p.add_argument("--crf", type=int, default=18, help="H.264 CRF (18)")
    p.add_argument("--suffix", default=".mp4", help="output extension (.mp4)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel encodes")
    p.add_argument("--shard", default="0/1", help="i/n: this machine's share; 'auto' reads "
                   "RANK/WORLD_SIZE")  # fmt: skip
    p.set_defaults(func=_run)
