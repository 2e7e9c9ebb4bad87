"""persam segment: find your object in new images."""
from __future__ import annotations

import argparse

from tqdm import tqdm

from .common import add_model_args, add_output_args, add_reference_args, prepare_image_run

HELP = "segment your object in images, from a reference image+mask or a saved concept"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help=HELP, description=HELP + ". Masks are written as OUT/<image name>.png (0/255).")
    add_model_args(parser)
    add_reference_args(parser)
    add_output_args(parser, "also write OUT/<name>_overlay.jpg with the mask and prompt points drawn")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sam_core.image_io import load_image
    from persam.io import save_image, save_mask_png
    from persam.overlay import draw_overlay

    persam, concept, images, out = prepare_image_run(args)
    found = 0
    for path in tqdm(images, desc=f"segment ({concept.method})", unit="img"):
        image = load_image(path)
        result = persam.segment(image, concept)
        save_mask_png(out / f"{path.stem}.png", result.mask)
        found += int(not result.empty)
        if args.overlay:
            picture = draw_overlay(image, result.mask, result.points, result.labels, result.box)
            save_image(out / f"{path.stem}_overlay.jpg", picture)
    print(f"wrote {len(images)} masks to {out} ({found} non-empty)")
    return 0
