"""The ``persam`` command line: a thin layer over the Python API.

Each sub-command lives in ``persam/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status). Every command then gets the
shared options of ``persam.commands.support`` (``--no-progress``, ``--threads``), one-line
errors and one-line warnings.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import select
import sys
import warnings

from persam.commands.support import (WarningPrinter, add_common_args_everywhere, apply_common_args,
                                     command_label, exception_line)

# Module names under persam.commands, in the order --help lists them.
COMMAND_MODULES = ("segment", "find", "learn", "search", "calibrate", "perseg", "eval_cmd", "davis", "track",
                   "bench", "download", "models", "app")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``persam segment: error: ... (see persam segment --help)``
    instead of the usage block, so every problem is one line on stderr (exit status 2)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # "--ref-point -5,10": argparse reads a value starting with "-" as an option unless it
        # looks like one negative number; comma lists of numbers are values too (private
        # attribute, the only hook argparse has for this).
        self._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[\d.]+(,\s*-?[\d.]+)+$")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from persam import __version__

    parser = Parser(
        prog="persam",
        description="One-shot personalized segmentation with Segment Anything (PerSAM / PerSAM-F).",
    )
    parser.add_argument("--version", action="version", version=f"persam {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # Every listed command ships with persam: one that fails to import is a broken install,
        # said loudly, never a sub-command silently missing from --help.
        try:
            module = importlib.import_module(f"persam.commands.{name}")
        except Exception as exc:
            raise ImportError(f"persam: the '{name}' command failed to import "
                              f"(persam.commands.{name}): {type(exc).__name__}: {exc}") from exc
        module.register(subparsers)
    add_common_args_everywhere(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    printer = WarningPrinter("persam")
    with warnings.catch_warnings():  # restores the previous handler afterwards
        warnings.showwarning = printer  # also covers warnings raised while commands are imported
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        printer.label = label = command_label(args)
        try:
            apply_common_args(args)
            status = args.func(args)
        except KeyboardInterrupt:
            print(f"{label}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError as exc:
            if not _stdout_closed():
                if args.debug:
                    raise
                print(f"{label}: error: {exception_line(exc)}", file=sys.stderr)
                return 1
            return 141  # the reader went away (`persam models | head`): quiet, as a Unix tool killed by SIGPIPE
        except Exception as exc:  # one line for users, the traceback with --debug
            if args.debug:
                raise
            print(f"{label}: error: {exception_line(exc)}", file=sys.stderr)
            return 1
    return int(status or 0)


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has gone; the rest of the output then
    goes nowhere, so Python's flush at exit does not fail (and print) again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return False
    closed = False
    if hasattr(select, "poll"):  # a pipe without a reader reports an error condition
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    if not closed:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            closed = True
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


if __name__ == "__main__":
    sys.exit(main())
