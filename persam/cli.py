"""The ``persam`` command line: a thin layer over the Python API.

Each sub-command lives in ``persam/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Module names under persam.commands, in the order --help lists them.
COMMAND_MODULES = ("segment", "find", "learn", "search", "calibrate", "perseg", "eval_cmd", "davis", "track",
                   "bench", "download", "models", "app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persam",
        description="One-shot personalized segmentation with Segment Anything (PerSAM / PerSAM-F).",
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("persam: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for users, the traceback with --debug
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"persam {args.command}: error: {message}", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
