"""persam segment: find your object in new images."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from .common import add_model_args, add_reference_args, load_reference, make_persam, reference_concept, unique_stems

HELP = "segment your object in images, from a reference image+mask (or clicks) or a saved concept"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help=HELP, description=HELP + ". Masks are written as OUT/<image name>.png (0/255).")
    add_model_args(parser)
    add_reference_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT/<name>_overlay.jpg with the mask and prompt points drawn")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of images")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.io import collect_images
    from persam_files import read_image as load_image, save_image, save_mask_png
    from persam.overlay import draw_overlay

    # Check everything cheap before any model is loaded.
    concept, reference = load_reference(args)
    images = collect_images(args.inputs)
    unique_stems(images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    persam = make_persam(args)
    concept = reference_concept(args, persam, concept, reference, out)
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
