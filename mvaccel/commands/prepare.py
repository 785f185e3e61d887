"""``mvaccel prepare``: re-encode a dataset tree; for UCF101 / HMDB51 also flow and lists.

``mvaccel prepare SRC_DIR OUT_DIR --reencode mpeg4|h264`` re-encodes a tree of videos.
``mvaccel prepare ucf101|hmdb51 SRC OUT`` makes the training folder of ``mvaccel train``::

    OUT/videos/<Class>/<video>.mp4   re-encoded (CoViAR's MPEG-4 340x256, GOP 12, no B-frames)
    OUT/flow/<Class>/<video>/flow_{x,y}_%05d.jpg   TV-L1 of the re-encoded frames, file t =
                                     tvl1(I_t, I_{t-1}), the direction of frame t's vectors
    OUT/lists/classInd.txt, trainlist0N.txt, testlist0N.txt   (UCF101's format for both)

Every step skips finished outputs (a rerun resumes) and takes ``--shard i/n``.
"""

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


DATASETS = ("ucf101", "hmdb51")


def _reencode_tree(src: Path, out: Path, args: argparse.Namespace) -> int:
    """Re-encode every video under ``src`` into ``out`` (mirrored); returns the failures."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from ..video import reencode

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
    return len(failed)


def _link_tree(src: Path, out: Path, shard: tuple[int, int]) -> None:
    """``--reencode none``: the videos stay where they are, linked into ``out``."""
    for s, d in plan(src, out, shard, ""):
        d = d.with_name(s.name)
        if not d.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            d.symlink_to(s.resolve())


def _write_lists(dataset: str, list_dir: Path, out: Path, suffix: str | None) -> int:
    """UCF101-format lists of all three splits under ``out`` (paths with ``suffix``)."""
    from ..data.lists import hmdb51_classes, hmdb51_split, read_class_index, ucf101_split
    from ..data.synthetic import _write_text

    out.mkdir(parents=True, exist_ok=True)
    if dataset == "ucf101":
        classes = read_class_index(list_dir / "classInd.txt")
        splits = [s for s in (1, 2, 3) if (list_dir / f"trainlist0{s}.txt").is_file()]
        read = ucf101_split
    else:
        classes = hmdb51_classes(list_dir)
        splits = [s for s in (1, 2, 3) if (list_dir / f"{classes[0]}_test_split{s}.txt").is_file()]
        read = hmdb51_split
    if not splits:
        raise FileNotFoundError(f"no split lists of {dataset} in {list_dir}")

    def rel(path: str) -> str:
        return str(Path(path).with_suffix(suffix)) if suffix else path

    _write_text(out / "classInd.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for s in splits:
        train, test = read(list_dir, s, "train"), read(list_dir, s, "test")
        _write_text(
            out / f"trainlist0{s}.txt", "".join(f"{rel(v.path)} {v.label + 1}\n" for v in train)
        )
        _write_text(out / f"testlist0{s}.txt", "".join(f"{rel(v.path)}\n" for v in test))
    print(f"lists of splits {splits} ({len(classes)} classes) -> {out}")
    return len(splits)


def _default_lists(dataset: str, src: Path) -> Path:
    names = ["ucfTrainTestlist"] if dataset == "ucf101" else ["testTrainMulti_7030_splits"]
    for d in [src / n for n in names] + [src.parent / n for n in names] + [src]:
        if dataset == "ucf101" and (d / "classInd.txt").is_file():
            return d
        if dataset == "hmdb51" and d.is_dir() and any(d.glob("*_test_split1.txt")):
            return d
    raise FileNotFoundError(
        f"cannot find the {dataset} split lists near {src}: pass --lists DIR "
        f"({'ucfTrainTestlist' if dataset == 'ucf101' else 'testTrainMulti_7030_splits'})"
    )


def _run_dataset(dataset: str, src: Path, out: Path, args: argparse.Namespace) -> int:
    from ..cli import main as cli_main

    list_dir = Path(args.lists) if args.lists else _default_lists(dataset, src)
    videos = out / "videos"
    failed = 0
    if args.reencode == "none":
        _link_tree(src, videos, parse_shard(args.shard))
        suffix = None
    else:
        failed = _reencode_tree(src, videos, args)
        suffix = args.suffix
    if args.flow_preset != "none":
        i, n = parse_shard(args.shard)
        cmd = ["flow", str(videos), str(out / "flow"), "--backward"]
        cmd += ["--preset", args.flow_preset, "--bound", str(args.flow_bound)]
        cmd += ["--device", args.device, "--shard", f"{i}/{n}"]
        if cli_main(cmd) != 0:
            return 1
    _write_lists(dataset, list_dir, out / "lists", suffix)
    print(f"prepared {dataset} -> {out} (train: mvaccel train --config recipes/<name>.yaml "
          f"--data.root {out})")  # fmt: skip
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    paths = args.paths
    if len(paths) == 3 and paths[0] in DATASETS:
        src, out = Path(paths[1]), Path(paths[2])
        if not src.is_dir():
            raise FileNotFoundError(f"{src}: no such directory")
        if args.reencode is None:
            args.reencode = "mpeg4"
        return _run_dataset(paths[0], src, out, args)
    if len(paths) != 2:
        raise ValueError(
            f"prepare takes SRC_DIR OUT_DIR or {'|'.join(DATASETS)} SRC OUT, got {paths}"
        )
    src, out = Path(paths[0]), Path(paths[1])
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    if args.reencode in (None, "none"):
        raise ValueError("nothing to do: give --reencode mpeg4 (CoViAR) or --reencode h264")
    return 1 if _reencode_tree(src, out, args) else 0


def register(sub) -> None:
    """Add ``prepare`` to the CLI."""
    p = sub.add_parser(
        "prepare",
        help="re-encode a dataset tree; ucf101|hmdb51: also TV-L1 flow and split lists "
        "(resumable, sharded)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[ucf101|hmdb51] SRC OUT",
        help="source folder of videos (searched recursively) and output folder",
    )
    p.add_argument("--reencode", choices=("mpeg4", "h264", "none"),
                   help="target codec (CoViAR: mpeg4; the default for ucf101|hmdb51); none: "
                   "keep the videos (dataset mode only)")  # fmt: skip
    p.add_argument("--size", default="340x256", help="WIDTHxHEIGHT (340x256)")
    p.add_argument("--gop", type=int, default=12, help="GOP length (12)")
    p.add_argument("--bframes", type=int, default=0, help="B-frames (0)")
    p.add_argument("--qscale", type=int, default=1, help="MPEG-4 quantizer (1)")
    p.add_argument("--crf", type=int, default=18, help="H.264 CRF (18)")
    p.add_argument("--suffix", default=".mp4", help="output extension (.mp4)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel encodes")
    p.add_argument("--shard", default="0/1", help="i/n: this machine's share; 'auto' reads "
                   "RANK/WORLD_SIZE")  # fmt: skip
    p.add_argument("--lists", help="ucf101|hmdb51: the split lists' folder (ucfTrainTestlist, "
                   "testTrainMulti_7030_splits; default: found in or beside SRC)")  # fmt: skip
    p.add_argument(
        "--flow-preset",
        dest="flow_preset",
        default="dense_flow",
        help="ucf101|hmdb51: TV-L1 preset (dense_flow = TSN's; fast; opencv) or none",
    )
    p.add_argument("--flow-bound", dest="flow_bound", type=float, default=20.0,
                   help="flow JPEG quantization bound in px (20)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="flow solver device: cpu or cuda")
    p.set_defaults(func=_run)
