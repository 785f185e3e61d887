"""``mvaccel prepare``: re-encode a dataset tree; for UCF101 / HMDB51 also flow and lists.

``mvaccel prepare SRC_DIR OUT_DIR --reencode mpeg4|h264`` re-encodes a tree of videos.
``mvaccel prepare ucf101|hmdb51 SRC OUT`` makes the training folder of ``mvaccel train``::

    OUT/videos/<Class>/<video>.mp4   re-encoded (CoViAR's MPEG-4 340x256, GOP 12, no B-frames)
    OUT/flow/<Class>/<video>/flow_{x,y}_%05d.jpg   TV-L1 of the re-encoded frames, file t =
                                     tvl1(I_t, I_{t-1}), the direction of frame t's vectors
    OUT/lists/classInd.txt, trainlist0N.txt, testlist0N.txt   (UCF101's format for both)

Every step skips finished outputs (a rerun resumes; outputs are written atomically and a
re-encode is decoded and checked against the source's frame count before it counts as done)
and takes ``--shard i/n``: each shard re-encodes and flows its share of the sorted *source*
list, so shards run in any order (or at once) into one OUT give the complete dataset.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DATASETS = ("ucf101", "hmdb51")


def plan(src: Path, out: Path, suffix: str | None) -> list[tuple[Path, Path]]:
    """``(source, output)`` of every video under ``src`` (sorted), the tree mirrored in ``out``.

    ``suffix`` replaces the extension (None keeps it). This is the *whole* job: a shard takes
    its share of this list (:func:`mvaccel._io.shard_items`), never of a listing of ``out``.
    """
    from .._io import find_videos

    pairs = []
    for p in find_videos(src):
        r = p.relative_to(src)
        pairs.append((p, out / (r.with_suffix(suffix) if suffix else r)))
    return pairs


def _reencode_tree(pairs, shard, args: argparse.Namespace):
    """Re-encode this shard's share of ``pairs``, ``--workers`` at a time; a JobReport."""
    from .._io import run_jobs
    from ..video import reencode

    w, h = (int(v) for v in args.size.lower().split("x"))

    def one(s: Path, d: Path) -> None:
        reencode(s, d, codec=args.reencode, size=(w, h), gop=args.gop, bframes=args.bframes,
                 qscale=args.qscale, crf=args.crf, threads=1)  # fmt: skip

    return run_jobs(pairs, one, shard=shard, workers=args.workers,
                    what="mvaccel prepare: re-encode")  # fmt: skip


def _link(s: Path, d: Path) -> None:
    from .._io import atomic_path

    with atomic_path(d) as tmp:
        tmp.symlink_to(s.resolve())


def _write_lists(dataset: str, list_dir: Path, out: Path, suffix: str | None) -> int:
    """UCF101-format lists of all three splits under ``out`` (paths with ``suffix``)."""
    from .._io import atomic_write_text
    from ..data.lists import hmdb51_classes, hmdb51_split, read_class_index, ucf101_split

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

    index = "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes))
    atomic_write_text(out / "classInd.txt", index)
    for s in splits:
        train, test = read(list_dir, s, "train"), read(list_dir, s, "test")
        atomic_write_text(
            out / f"trainlist0{s}.txt", "".join(f"{rel(v.path)} {v.label + 1}\n" for v in train)
        )
        atomic_write_text(out / f"testlist0{s}.txt", "".join(f"{rel(v.path)}\n" for v in test))
    log.info("lists of splits %s (%d classes) -> %s", splits, len(classes), out)
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
    from .._io import parse_shard, run_jobs
    from ..flow import flow_tree

    list_dir = Path(args.lists) if args.lists else _default_lists(dataset, src)
    shard = parse_shard(args.shard)
    if args.flow_preset != "none":  # fail before hours of re-encoding, not after
        from ..flow import TVL1Params
        from ..flow.video import check_device

        TVL1Params.preset(args.flow_preset)
        check_device(args.device, "mvaccel prepare --device")
    videos = out / "videos"
    if args.reencode == "none":
        pairs = plan(src, videos, None)
        report = run_jobs(pairs, _link, shard=shard, quiet=True, what="mvaccel prepare: link")
        suffix = None
    else:
        suffix = args.suffix
        pairs = plan(src, videos, suffix)
        report = _reencode_tree(pairs, shard, args)
    failed = len(report.failed)
    if args.flow_preset != "none":
        # the flow of exactly this shard's videos: shard by the source list, so any set of
        # shard runs, in any order, leaves every video with its flow
        sources = [(d, d.relative_to(videos).with_suffix("")) for _, d in pairs]
        flows = flow_tree(
            videos, out / "flow", args.flow_preset, bound=args.flow_bound, device=args.device,
            backward=True, shard=shard, sources=sources,
        )  # fmt: skip
        failed += len(flows.failed)
    _write_lists(dataset, list_dir, out / "lists", suffix)
    log.info(
        "prepared %s shard %d/%d -> %s (train: mvaccel train --config <recipe> --data.root %s)",
        dataset, *shard, out, out,
    )  # fmt: skip
    if failed:
        log.error("mvaccel prepare: %d video(s) failed (see above); rerun to retry them", failed)
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
    from .._io import parse_shard

    report = _reencode_tree(plan(src, out, args.suffix), parse_shard(args.shard), args)
    return 0 if report.ok else 1


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
    p.add_argument("--shard", default=None, help="i/n: this machine's share of the sorted "
                   "source videos (default: torchrun RANK/WORLD_SIZE or SLURM array/task "
                   "variables, else all)")  # fmt: skip
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
