"""persam segment: find your object in new images."""
from __future__ import annotations

import argparse

from .common import add_model_args, add_output_args, add_reference_args, prepare_image_run
from .support import FAILURES_FILE, plural, run_batch

HELP = "segment your object in images, from a reference image+mask (or clicks) or a saved concept"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help=HELP, description=HELP + ". Masks are written as OUT/<image name>.png (0/255); "
        "folders are searched recursively and their structure is mirrored under OUT (inputs "
        "d1/x.jpg and d2/x.jpg give OUT/d1/x.png and OUT/d2/x.png). An image that fails is listed "
        f"at the end and in OUT/{FAILURES_FILE}; the others are still segmented (exit status 1 if "
        "any failed).")
    add_model_args(parser, concept=True)
    add_reference_args(parser)
    add_output_args(parser, "also write OUT/<name>_overlay.jpg with the mask and prompt points drawn")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.overlay import draw_overlay
    from persam_files import save_image, save_mask_png

    # Everything is checked before the model is loaded and before anything is written.
    persam, concept, images, out = prepare_image_run(args)
    found = 0

    def segment_one(item) -> None:
        nonlocal found
        image, embedding = persam.embed(item.path)
        result = persam.segment_embedding(embedding, concept)
        save_mask_png(item.output(out), result.mask)
        found += int(not result.empty)
        if args.overlay:
            picture = draw_overlay(image, result.mask, result.points, result.labels, result.box)
            save_image(item.output(out, "_overlay.jpg"), picture)

    batch = run_batch(images, segment_one, args, failures_file=out / FAILURES_FILE,
                      desc=f"segment ({concept.method})", unit="img")
    summary = f"wrote {plural(batch.done, 'mask')} to {out} ({found} non-empty)"
    if batch.failures:
        summary += (f"; {plural(len(batch.failures), 'image')} failed (listed on stderr and in "
                    f"{out / FAILURES_FILE})")
    print(summary)
    return batch.exit_status
