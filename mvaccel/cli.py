"""The ``mvaccel`` command line: sub-commands come from :mod:`mvaccel.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mvaccel``, one sub-command per module of ``mvaccel.commands``."""
    p = argparse.ArgumentParser(
        prog="mvaccel",
        description="Motion representations for video action recognition.",
    )
    p.add_argument("--version", action="version", version=f"mvaccel {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mvaccel`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"mvaccel {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
