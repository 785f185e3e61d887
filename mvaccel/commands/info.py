"""``mvaccel info``: torch / CUDA / FFmpeg / build facts, and which GPU path the ops use."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from ..info import collect, format_facts

    print(format_facts(collect()))
    return 0


def register(sub) -> None:
    """Add ``info`` to the CLI."""
    p = sub.add_parser(
        "info",
        help="print torch / CUDA / FFmpeg / build facts and the GPU path (nvcc, NVRTC, none)",
    )
    p.set_defaults(func=_run)
