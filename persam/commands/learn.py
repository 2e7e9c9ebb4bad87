"""persam learn: learn a concept once, save it, reuse it without the reference image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_args, make_persam
from .support import check_output_file, plural

HELP = "learn a concept from a reference image and mask and save it to a small file"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learn", help=HELP, description=HELP + ". PerSAM-F (--method persam-f) also fits the weights "
        "w1, w2 of SAM's second and third mask scales; the first scale gets 1 - w1 - w2.")
    add_model_args(parser)
    parser.add_argument("--ref-image", required=True, action="append", metavar="IMG",
                        help="reference image (repeat with --ref-mask for few-shot learning)")
    parser.add_argument("--ref-mask", required=True, action="append", metavar="PNG",
                        help="mask of the object in the matching --ref-image (any nonzero pixel is "
                             "the object; greyscale, palette or 1-bit, not a photo)")
    parser.add_argument("--name", default=None, help="a name stored in the concept (default: image name)")
    parser.add_argument("--save", required=True, metavar="FILE",
                        help="where to write the concept (an existing file is replaced)")
    parser.set_defaults(func=run)


def describe_weights(weights) -> str:
    """PerSAM-F's three scale weights as the two it learns plus the derived first one."""
    first, w1, w2 = (float(w) for w in weights.reshape(-1).tolist())
    return f"mask weights w1={w1:.4f}, w2={w2:.4f} (the first mask gets 1 - w1 - w2 = {first:.4f})"


def run(args: argparse.Namespace) -> int:
    from persam.masks import load_mask
    from persam.model import check_image_size
    from persam.prior import reference_grid
    from persam_files import read_image

    # Every input and the output path are checked before the model is loaded.
    if len(args.ref_image) != len(args.ref_mask):
        raise ValueError(f"got {len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask; "
                         "give one --ref-mask after each --ref-image")
    save = check_output_file(args.save)
    pairs = []
    for image_path, mask_path in zip(args.ref_image, args.ref_mask):
        image = read_image(image_path)
        check_image_size(image, image_path)
        mask = load_mask(mask_path, image.shape[:2], name=mask_path)
        reference_grid(mask, mask_path)
        pairs.append((image, mask))
    persam = make_persam(args)
    concept = persam.learn(pairs, name=args.name or Path(args.ref_image[0]).stem)
    path = concept.save(save)
    weights = "" if concept.mask_weights is None else "; " + describe_weights(concept.mask_weights)
    print(f"saved {concept.method} concept '{concept.name}' (SAM {concept.model_type}, "
          f"{plural(len(pairs), 'reference')}){weights} to {path}")
    return 0
