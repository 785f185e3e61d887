"""``mvaccel demo``: the built-in demo on synthetic data (what ``make demo`` runs)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..demo import run

    run(args.out)
    return 0


def register(sub) -> None:
    """Add ``demo`` to the CLI."""
    p = sub.add_parser("demo", help="run the built-in demo on synthetic data")
    p.add_argument("--out", default="out/demo", help="folder for the demo's outputs")
    p.set_defaults(func=_run)
