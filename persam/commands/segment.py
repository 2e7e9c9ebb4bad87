"""persam segment: find your object in new images."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .common import add_model_args, make_persam
from .support import (FAILURES_FILE, check_output_dir, collect_inputs, given, plural, run_batch)

HELP = "segment your object in images, from a reference image+mask or a saved concept"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help=HELP, description=HELP + ". Masks are written as OUT/<image name>.png (0/255); "
        "folders are searched recursively and their structure is mirrored under OUT (inputs "
        "d1/x.jpg and d2/x.jpg give OUT/d1/x.png and OUT/d2/x.png). An image that fails is listed "
        f"at the end and in OUT/{FAILURES_FILE}; the others are still segmented (exit status 1 if "
        "any failed).")
    add_model_args(parser)
    ref = parser.add_argument_group("what to look for (a reference pair or a concept)")
    ref.add_argument("--ref-image", metavar="IMG", help="reference image showing your object")
    ref.add_argument("--ref-mask", metavar="PNG", help="mask of your object in the reference image "
                     "(any nonzero pixel is the object; greyscale, palette or 1-bit, not a photo). "
                     "It is never segmented when it sits in an input folder")
    ref.add_argument("--concept", metavar="FILE", help="a concept saved by 'persam learn'")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created when the first mask is written)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT/<name>_overlay.jpg with the mask and prompt points drawn")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of images")
    parser.set_defaults(func=run)


def check_reference_args(args: argparse.Namespace) -> None:
    if args.concept and (args.ref_image or args.ref_mask):
        raise ValueError("give either --concept or --ref-image/--ref-mask, not both")
    if not args.concept and not (args.ref_image and args.ref_mask):
        raise ValueError("give --ref-image and --ref-mask (or --concept FILE)")


def warn_about_ignored_options(args: argparse.Namespace, concept, source: str) -> None:
    """A saved concept fixes the method (and its fitted weights): say so when asked otherwise."""
    if given(getattr(args, "method", None)) and args.method != concept.method:
        warnings.warn(f"--method {args.method} ignored: {source} was learned with {concept.method}, "
                      f"so it segments with {concept.method}")
    if given(getattr(args, "fit_steps", None)):
        warnings.warn(f"--fit-steps ignored: {source} is already learned")


def run(args: argparse.Namespace) -> int:
    from persam import Concept
    from persam.masks import load_mask
    from persam.model import check_image_size
    from persam.overlay import draw_overlay
    from persam.prior import reference_grid
    from persam_files import read_image, save_image, save_mask_png

    # Everything is checked before the model is loaded and before anything is written.
    check_reference_args(args)
    out = check_output_dir(args.out)
    images = collect_inputs(args.inputs, out=out, exclude=[args.ref_mask, args.concept])
    concept = Concept.load(args.concept) if args.concept else None
    if concept is not None:
        warn_about_ignored_options(args, concept, f"concept {args.concept}")
    else:
        ref_image = read_image(args.ref_image)
        check_image_size(ref_image, args.ref_image)
        ref_mask = load_mask(args.ref_mask, ref_image.shape[:2], name=args.ref_mask)
        reference_grid(ref_mask, args.ref_mask)

    persam = make_persam(args)
    if concept is None:
        concept = persam.learn(ref_image, ref_mask, name=Path(args.ref_image).stem)
    persam.check_concept(concept)
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
