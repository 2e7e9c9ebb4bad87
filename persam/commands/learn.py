"""persam learn: learn a concept once, save it, reuse it without the reference image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (add_model_args, add_reference_prompt_args, clicked_reference_mask,
                     has_reference_prompts, make_persam)
from .support import check_output_file, plural

HELP = "learn a concept from a reference image and a mask (or clicks) and save it to a small file"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn", help=HELP, description=HELP + ". PerSAM-F (--method persam-f) also fits the weights "
        "w1, w2 of SAM's second and third mask scales; the first scale gets 1 - w1 - w2.")
    add_model_args(parser)
    ref = parser.add_argument_group("reference (an image and a mask, or an image and clicks)")
    ref.add_argument("--ref-image", required=True, action="append", metavar="IMG",
                     help="reference image (repeat with --ref-mask for few-shot learning)")
    ref.add_argument("--ref-mask", action="append", metavar="PNG",
                     help="mask of the object in the matching --ref-image (any nonzero pixel is "
                          "the object; greyscale, palette or 1-bit, not a photo)")
    add_reference_prompt_args(ref)
    parser.add_argument("--name", default=None, help="a name stored in the concept (default: image name)")
    parser.add_argument("--save", required=True, metavar="FILE",
                        help="where to write the concept (an existing file is replaced; with clicks, "
                             "the mask SAM made is written beside it as <FILE stem>_ref_mask.png)")
    parser.set_defaults(func=run)


def clicked_mask_path(concept_path: str | Path) -> Path:
    """Where the mask made from clicks is written: beside the concept, so people can see it."""
    path = Path(concept_path)
    return path.with_name(f"{path.stem}_ref_mask.png")


def describe_weights(weights) -> str:
    """PerSAM-F's three scale weights as the two it learns plus the derived first one."""
    first, w1, w2 = (float(w) for w in weights.reshape(-1).tolist())
    return f"mask weights w1={w1:.4f}, w2={w2:.4f} (the first mask gets 1 - w1 - w2 = {first:.4f})"


def run(args: argparse.Namespace) -> int:
    from persam.masks import load_mask
    from persam.model import check_image_size
    from persam.prior import reference_grid
    from persam_files import read_image, save_mask_png

    # Every input and the output path are checked before the model is loaded.
    clicked = has_reference_prompts(args)
    if clicked and (args.ref_mask or len(args.ref_image) != 1):
        raise ValueError("with --ref-point/--ref-box give exactly one --ref-image and no --ref-mask")
    if not clicked and not args.ref_mask:
        raise ValueError("give --ref-mask PNG (or --ref-point X,Y / --ref-box to make the mask with SAM)")
    if not clicked and len(args.ref_image) != len(args.ref_mask):
        raise ValueError(f"got {len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask; "
                         "give one --ref-mask after each --ref-image")
    save = check_output_file(args.save, inputs=[("--ref-image", path) for path in args.ref_image]
                             + [("--ref-mask", path) for path in args.ref_mask or []])
    pairs = []
    for index, image_path in enumerate(args.ref_image):
        image = read_image(image_path)
        check_image_size(image, image_path)
        mask = None
        if not clicked:
            mask_path = args.ref_mask[index]
            mask = load_mask(mask_path, image.shape[:2], name=mask_path)
            reference_grid(mask, mask_path)
        pairs.append((image, mask))
    persam = make_persam(args)
    mask_note = ""
    if clicked:
        image = pairs[0][0]
        mask = clicked_reference_mask(persam, image, args, args.ref_image[0])
        reference_grid(mask, f"the mask SAM made from your --ref-point/--ref-box on {args.ref_image[0]}")
        pairs = [(image, mask)]
        mask_note = f"; reference mask {save_mask_png(clicked_mask_path(save), mask)}"
    concept = persam.learn(pairs, name=args.name or Path(args.ref_image[0]).stem)
    path = concept.save(save)
    weights = "" if concept.mask_weights is None else "; " + describe_weights(concept.mask_weights)
    print(f"saved {concept.method} concept '{concept.name}' (SAM {concept.model_type}, "
          f"{plural(len(pairs), 'reference')}){weights} to {path}{mask_note}")
    return 0
