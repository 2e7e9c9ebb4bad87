"""persam download: fetch named models into the cache (checksummed, resumable)."""
from __future__ import annotations

import argparse

HELP = "download models by name into the cache (see 'persam models')"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download", help=HELP,
        description=HELP + ". Each file is verified by SHA-256 before first use; an interrupted "
                           "download resumes on the next run. Cache folder: $PERSAM_HOME, else the "
                           "user cache folder.")
    parser.add_argument("names", nargs="+", metavar="NAME", help="vit_t, vit_b, vit_l, vit_h, or a "
                        "PERSAM_MODELS_FILE entry")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam_core.weights import fetch, is_cached, model_entries

    entries = model_entries()
    unknown = [name for name in args.names if name not in entries]
    if unknown:
        raise ValueError(f"unknown model name {unknown[0]!r}; choose from {', '.join(entries)}")
    for name in args.names:
        entry = entries[name]
        cached = is_cached(entry)
        path = fetch(entry, progress=not getattr(args, "no_progress", False))
        print(f"{name}: {'already cached' if cached else 'downloaded'}: {path}")
    return 0
