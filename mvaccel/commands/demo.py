"""``mvaccel demo``: the built-in demo on synthetic data (what ``make demo`` runs)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run

    cfg = DemoConfig(seed=args.seed)
    run(args.out, cfg, threads=args.threads, all_strategies=args.all_strategies,
        quick=args.quick)  # fmt: skip
    return 0


def register(sub) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser("demo", help="run the built-in demo on synthetic data")
    p.add_argument("--out", default="out/demo", help="folder for the demo's outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--all-strategies", dest="all_strategies", action="store_true",
                   help="also train the TI, ST, ST+TI and TI+DC students")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="only the block_upsample/mv_resize step")
    p.set_defaults(func=_run)
