"""The ``mvaccel`` command line: sub-commands come from :mod:`mvaccel.commands`.

Verbosity: ``-v`` (debug messages and the traceback of an error), ``-q`` (warnings and errors
only, no progress bars); before or after the command name. Results a user asked for (tables,
statistics, paths written) go to stdout, everything else through :mod:`logging` to stderr.
An error is one line on stderr, ``mvaccel COMMAND: error: ...`` naming the file, exit code 1
(2 for bad usage, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import commands
from ._version import __version__

log = logging.getLogger("mvaccel")

#: Errors reported as one line (with ``-v`` also their traceback); others are bugs and raise.
USER_ERRORS = (OSError, ValueError, TypeError, ImportError, RuntimeError, EOFError, KeyError)


def _verbosity_args(p: argparse.ArgumentParser, top: bool) -> None:
    default = 0 if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="count", default=default,
                   help="more messages; the traceback of an error")  # fmt: skip
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="only warnings and errors; no progress bars",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mvaccel``, one sub-command per module of ``mvaccel.commands``."""
    p = argparse.ArgumentParser(
        prog="mvaccel",
        description="Motion representations for video action recognition.",
    )
    p.add_argument("--version", action="version", version=f"mvaccel {__version__}")
    _verbosity_args(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}").register(sub)
    for sp in sub.choices.values():
        if sp.prefix_chars == "-":  # not train, whose arguments all go to LightningCLI
            _verbosity_args(sp, top=False)
    return p


def _message(e: BaseException) -> str:
    from ._io import describe_os_error

    if isinstance(e, OSError) and e.filename is not None:
        return describe_os_error(e)
    if isinstance(e, KeyError):
        return f"missing key {e}"
    return str(e) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mvaccel`` console script; returns the exit code."""
    from ._io import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose - (1 if args.quiet and not args.verbose else 0)
    setup_logging(verbosity)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.error("mvaccel %s: interrupted", args.command)
        return 130
    except USER_ERRORS as e:
        log.error("mvaccel %s: error: %s", args.command, _message(e))
        if args.verbose:
            log.error("traceback:", exc_info=True)
        else:
            log.info("(run with -v for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
