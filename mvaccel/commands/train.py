"""``mvaccel train``: train a recipe with LightningCLI (``mvaccel train --config R.yaml``)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..train.cli import run

    run(args.args)
    return 0


def register(sub) -> None:
    """Add ``train`` to the CLI; every argument goes to LightningCLI (see ``train -h``)."""
    p = sub.add_parser(
        "train",
        help="train a recipe: mvaccel train --config recipes/<name>.yaml [--trainer.X ...]",
        prefix_chars="\0",  # every argument is LightningCLI's, none is ours
        add_help=False,
    )
    p.add_argument("args", nargs="*")
    p.set_defaults(func=_run)
