"""persam models: the model names, their sizes, and whether they are in the cache."""
from __future__ import annotations

import argparse

HELP = "list model names, sizes and the cache (name, type, size, cached, path)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help=HELP,
        description=HELP + ". A name can be given to --checkpoint anywhere; it is downloaded on first "
                           "use ('persam download NAME' does it ahead). PERSAM_MODELS_FILE adds entries.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam_core.weights import cache_dir, cached_path, is_cached, model_entries, partial_bytes

    rows = [("name", "type", "size", "cached", "path")]
    for name, entry in model_entries().items():
        size = "?" if entry.bytes is None else (
            f"{entry.bytes / 1e9:.2f} GB" if entry.bytes >= 1e9 else f"{entry.bytes / 1e6:.1f} MB")
        if is_cached(entry):
            state = "yes"
        elif partial_bytes(entry):
            done = partial_bytes(entry)
            state = f"partial({100 * done // entry.bytes}%)" if entry.bytes else "partial"
        else:
            state = "no"
        rows.append((name, entry.model_type or "?", size, state, str(cached_path(entry))))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    print(f"cache folder: {cache_dir()} (set PERSAM_HOME to move it)")
    return 0
