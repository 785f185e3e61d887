"""``mvaccel eval``: video-level top-1 of trained checkpoints, per-video scores saved.

One checkpoint: its top-1 / mean class accuracy. Several (or ``--splits``, checkpoint ``i``
evaluated on split ``i``): each one's and their mean (:func:`mean_over_splits`, the papers'
"mean over the three splits"). ``--clips N``: multi-clip testing of clip models (MARS).
``--map LIST``: THUMOS14 mAP against a multi-label list (:func:`thumos14_map`). Saved score
files (``.npz`` of ``eval`` / ``fuse``) may stand in for checkpoints: they are scored as saved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _out_paths(out: str, n: int, splits: bool) -> list[Path]:
    """Where ``--out`` writes ``n`` inputs' scores.

    The path itself for one; ``STEM_split<i>.npz`` (``--splits``) or ``STEM_<i>.npz`` for several.
    """
    out = Path(out)
    if n == 1:
        return [out]
    tag = "_split" if splits else "_"
    return [out.with_name(f"{out.stem}{tag}{i}{out.suffix or '.npz'}") for i in range(1, n + 1)]


def _view(r: dict) -> str:
    """How a result was tested: segments or clips, crops."""
    if r.get("clips") is not None:
        clips = "every non-overlapping clip" if r["clips"] == 0 else f"{r['clips']} clips"
        return f"{clips} x {r['crops']} crop(s)"
    return f"{r['segments']} segments x {r['crops']} crop(s)"


def _run(args: argparse.Namespace) -> int:
    from ..train.evaluate import (
        accuracy,
        evaluate,
        load_scores,
        mean_class_accuracy,
        mean_over_splits,
        save_scores,
        thumos14_map,
    )

    paths = args.checkpoints
    if args.splits:
        if args.split is not None:
            raise ValueError("--splits evaluates checkpoint i on split i; leave out --split")
        if not 1 <= len(paths) <= 3:
            raise ValueError(f"--splits: 1 to 3 checkpoints (splits 1, 2, 3), got {len(paths)}")
    if args.clips is not None and args.clips < 0:
        raise ValueError(f"--clips must be >= 0 (0 = every non-overlapping clip), got {args.clips}")
    if args.map_list is not None and not Path(args.map_list).is_file():
        raise FileNotFoundError(f"--map: THUMOS14 list not found: {args.map_list}")
    overrides = {}
    for key in ("root", "split", "list_dir", "video_root", "flow_root", "frame_root",
                "video_ext", "num_workers"):  # fmt: skip
        v = getattr(args, key)
        if v is not None:
            overrides[key] = v
    if args.cache:
        overrides["cache"] = True
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    outs = _out_paths(args.out, len(paths), args.splits) if args.out else [None] * len(paths)
    results, maps, rows = [], [], []
    for i, (path, out) in enumerate(zip(paths, outs, strict=True), 1):
        where = f"split {i}: " if args.splits else ""
        if Path(path).suffix == ".npz":
            r = load_scores(path)
            top1 = accuracy(r["scores"], r["labels"])
            mean_class = mean_class_accuracy(r["scores"], r["labels"])
            print(f"{where}{path}: {len(r['labels'])} videos (saved scores): top-1 "
                  f"{100 * top1:.2f} %, mean class {100 * mean_class:.2f} %")  # fmt: skip
            out = None  # already a score file: not rewritten
        else:
            kw = dict(overrides, split=i) if args.splits else overrides
            r = evaluate(
                path, subset=args.subset, segments=args.segments, crops=args.crops,
                batch_size=args.batch_size, num_workers=args.num_workers or 0, device=device,
                limit=args.limit, clips=args.clips, progress=not args.quiet, **kw,
            )  # fmt: skip
            top1, mean_class = r["top1"], r["mean_class"]
            print(
                f"{where}{path}: {len(r['labels'])} videos, {r['modality']}, {_view(r)}: top-1 "
                f"{100 * top1:.2f} %, mean class {100 * mean_class:.2f} %; CNN "
                f"{r['frames_per_s']:.0f} frames/s ({r['cnn_inputs_per_s']:.1f} inputs/s on "
                f"{device}), {r['videos_per_s']:.2f} videos/s with data loading"
            )
        row = {"input": str(path), "videos": len(r["labels"]), "top1": top1,
               "mean_class": mean_class}  # fmt: skip
        if args.splits:
            row["split"] = i
        if args.map_list is not None:
            m = thumos14_map(r, args.map_list)
            maps.append(m)
            row["map"] = m
            print(f"{where}{path}: THUMOS14 mAP {100 * m:.2f} % ({args.map_list})")
        if out is not None:
            row["scores"] = str(save_scores(out, r))
            print(f"wrote {row['scores']}")
        elif Path(path).suffix == ".npz":
            row["scores"] = str(path)
        results.append(r)
        rows.append(row)
    if len(results) > 1:
        import numpy as np

        mean = mean_over_splits(results)
        what = f"the {len(results)} splits" if args.splits else f"{len(results)} checkpoints"
        line = (f"mean over {what}: top-1 {100 * mean['top1']:.2f} %, mean class "
                f"{100 * mean['mean_class']:.2f} %")  # fmt: skip
        summary = {"top1": mean["top1"], "mean_class": mean["mean_class"]}
        if maps:
            summary["map"] = float(np.mean(maps))
            line += f", THUMOS14 mAP {100 * summary['map']:.2f} %"
        print(line)
        if args.out:
            path = Path(args.out).with_suffix(".json")
            from .._io import atomic_write_text

            atomic_write_text(path, json.dumps({"mean": summary, "inputs": rows}, indent=1))
            print(f"wrote {path}")
    return 0


def register(sub) -> None:
    """Add ``eval`` to the CLI."""
    p = sub.add_parser(
        "eval",
        help="video-level accuracy of checkpoints (splits' mean, multi-clip, THUMOS14 mAP); "
        "saves per-video scores",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help=".ckpt written by mvaccel train (several: each one and their mean), or "
                   ".npz scores of eval / fuse, scored as saved")  # fmt: skip
    p.add_argument("--splits", action="store_true",
                   help="the CKPTs were trained on splits 1, 2, 3: each is evaluated on its "
                   "split, and the mean over the splits printed")  # fmt: skip
    p.add_argument("--out", help="write per-video scores (.npz) for mvaccel fuse; with several "
                   "CKPTs OUT_<i>.npz (--splits: OUT_split<i>.npz; .npz inputs are not "
                   "rewritten) and OUT.json, the accuracies and their mean")  # fmt: skip
    p.add_argument("--segments", type=int, default=25, help="segments per video (25)")
    p.add_argument("--clips", type=int,
                   help="clip models (3D CNNs) only: N clips covering the video, 0 = every "
                   "non-overlapping clip (MARS); default: the recipe's")  # fmt: skip
    p.add_argument("--map", dest="map_list", metavar="LIST",
                   help="also print THUMOS14 mAP against this multi-label list "
                   "(mvaccel.data.lists.thumos14_list; videos matched by name)")  # fmt: skip
    p.add_argument("--crops", type=int, default=1, choices=(1, 10), help="1 centre or 10 crops")
    p.add_argument("--subset", default="test", choices=("test", "train"))
    p.add_argument("--root", help="dataset folder (default: the one the checkpoint trained on)")
    p.add_argument("--split", type=int, choices=(1, 2, 3), help="split (default: the training's)")
    p.add_argument("--list-dir", dest="list_dir")
    p.add_argument("--video-root", dest="video_root")
    p.add_argument("--flow-root", dest="flow_root")
    p.add_argument("--frame-root", dest="frame_root")
    p.add_argument("--video-ext", dest="video_ext")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1, help="videos per batch")
    p.add_argument("--workers", dest="num_workers", type=int, help="data loader workers")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto)")
    p.add_argument("--limit", type=int, help="only N videos (a seeded class-stratified subset)")
    p.add_argument("--cache", action="store_true", help="keep decoded videos in memory")
    p.set_defaults(func=_run)
