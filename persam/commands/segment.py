"""persam segment: find your object in new images."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from .common import (add_model_args, add_reference_prompt_args, clicked_reference_mask,
                     has_reference_prompts, make_persam)

HELP = "segment your object in images, from a reference image+mask (or clicks) or a saved concept"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help=HELP, description=HELP + ". Masks are written as OUT/<image name>.png (0/255).")
    add_model_args(parser)
    ref = parser.add_argument_group("what to look for (a reference pair or a concept)")
    ref.add_argument("--ref-image", metavar="IMG", help="reference image showing your object")
    ref.add_argument("--ref-mask", metavar="PNG", help="mask of your object in the reference image "
                     "(any nonzero pixel is the object)")
    add_reference_prompt_args(ref)
    ref.add_argument("--concept", metavar="FILE", help="a concept saved by 'persam learn'")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT/<name>_overlay.jpg with the mask and prompt points drawn")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of images")
    parser.set_defaults(func=run)


def check_reference_args(args: argparse.Namespace) -> None:
    clicked = has_reference_prompts(args)
    if args.concept and (args.ref_image or args.ref_mask or clicked):
        raise ValueError("give either --concept or --ref-image with --ref-mask/--ref-point, not both")
    if args.concept:
        return
    if args.ref_mask and clicked:
        raise ValueError("give either --ref-mask or --ref-point/--ref-box, not both")
    if not (args.ref_image and (args.ref_mask or clicked)):
        raise ValueError("give --ref-image with --ref-mask (or --ref-point X,Y), or --concept FILE")


def clicked_mask_path(out: Path, ref_image: str) -> Path:
    """Where the reference mask made from clicks is written, so people can see what was used."""
    return out / f"{Path(ref_image).stem}_ref_mask.png"


def run(args: argparse.Namespace) -> int:
    from sam_core.image_io import load_image
    from persam import Concept
    from persam.io import collect_images, save_image, save_mask_png
    from persam.masks import load_mask
    from persam.overlay import draw_overlay
    from persam.prior import reference_grid

    # Check everything cheap before any model is loaded.
    check_reference_args(args)
    images = collect_images(args.inputs)
    names = [image.stem for image in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs are named {duplicates[0]!r}; their masks would overwrite each other")
    concept = Concept.load(args.concept) if args.concept else None
    if concept is None:
        ref_image = load_image(args.ref_image)
        if args.ref_mask:
            ref_mask = load_mask(args.ref_mask, ref_image.shape[:2], name=args.ref_mask)
            reference_grid(ref_mask, args.ref_mask)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    persam = make_persam(args)
    if concept is None:
        if not args.ref_mask:
            ref_mask = clicked_reference_mask(persam, ref_image, args, args.ref_image)
            reference_grid(ref_mask, f"the mask made from the clicks on {args.ref_image}")
            save_mask_png(clicked_mask_path(out, args.ref_image), ref_mask)
        concept = persam.learn(ref_image, ref_mask, name=Path(args.ref_image).stem)
    persam.check_concept(concept)
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
