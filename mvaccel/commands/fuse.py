"""``mvaccel fuse``: weighted fusion of per-video score files; prints the accuracy table."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train.evaluate import format_table, fuse, fusion_table, load_scores, save_scores

    weights = args.weights
    if weights is None:
        weights = [1.0] * len(args.scores)
    if len(weights) != len(args.scores):
        raise ValueError(
            f"--weights: {len(args.scores)} score files but {len(weights)} weight(s); give one "
            "weight per file, in the same order"
        )
    results = [load_scores(p) for p in args.scores]
    names = [Path(p).stem for p in args.scores]
    print(format_table(fusion_table(results, names, weights, softmax=not args.logits)))
    if args.out:
        print(f"wrote {save_scores(args.out, fuse(results, weights, softmax=not args.logits))}")
    return 0


def register(sub) -> None:
    """Add ``fuse`` to the CLI."""
    p = sub.add_parser(
        "fuse", help="fuse per-video score files with weights (two-stream: rgb 1, temporal 2)"
    )
    p.add_argument("scores", nargs="+", help=".npz score files of mvaccel eval")
    p.add_argument("--weights", type=float, nargs="+", help="one per file (default all 1)")
    p.add_argument("--logits", action="store_true", help="fuse raw scores, not softmax")
    p.add_argument("--out", help="write the fused scores (.npz)")
    p.set_defaults(func=_run)
