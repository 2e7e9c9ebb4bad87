"""persam learn: learn a concept once, save it, reuse it without the reference image."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_args, make_persam

HELP = "learn a concept from a reference image and mask and save it to a small file"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("learn", help=HELP, description=HELP + ".")
    add_model_args(parser)
    parser.add_argument("--ref-image", required=True, action="append", metavar="IMG",
                        help="reference image (repeat with --ref-mask for few-shot learning)")
    parser.add_argument("--ref-mask", required=True, action="append", metavar="PNG",
                        help="mask of the object in the matching --ref-image")
    parser.add_argument("--name", default=None, help="a name stored in the concept (default: image name)")
    parser.add_argument("--save", required=True, metavar="FILE", help="where to write the concept")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam_files import read_image as load_image
    from persam.masks import load_mask
    from persam.prior import reference_grid

    if len(args.ref_image) != len(args.ref_mask):
        raise ValueError(f"got {len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask")
    pairs = []
    for image_path, mask_path in zip(args.ref_image, args.ref_mask):
        image = load_image(image_path)
        mask = load_mask(mask_path, image.shape[:2], name=mask_path)
        reference_grid(mask, mask_path)
        pairs.append((image, mask))
    persam = make_persam(args)
    concept = persam.learn(pairs, name=args.name or Path(args.ref_image[0]).stem)
    path = concept.save(args.save)
    weights = "" if concept.mask_weights is None else \
        " weights " + ", ".join(f"{w:.4f}" for w in concept.mask_weights.tolist())
    print(f"saved {concept.method} concept '{concept.name}' ({concept.model_type},"
          f" {len(pairs)} reference{'s' if len(pairs) > 1 else ''}){weights} to {path}")
    return 0
