"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse

from sam_core import DEFAULT_MODEL, MODEL_TYPES, build_sam

from ..concept import METHODS
from ..timing import StageTimer

__all__ = ["StageTimer", "add_model_args", "check_fit_steps", "load_sam", "make_persam"]


def add_model_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="auto", choices=("auto",) + MODEL_TYPES,
                       help="SAM variant (default: read from the checkpoint)")
    group.add_argument("--checkpoint", default=DEFAULT_MODEL, metavar="CKPT",
                       help="a model name (vit_t, vit_b, vit_l, vit_h: downloaded and checksummed on "
                            "first use, see 'persam models'), a checkpoint file (e.g. mobile_sam.pt), "
                            "a transformers SamModel folder or a Hugging Face hub id "
                            f"(default: {DEFAULT_MODEL}, MobileSAM, 40 MB)")
    group.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    if method:
        group.add_argument("--method", default="persam", choices=METHODS,
                           help="persam: training-free; persam-f: fits two mask weights on the "
                                "reference (default: persam)")
        group.add_argument("--fit-steps", type=int, default=1000, metavar="N",
                           help="PerSAM-F optimizer steps on the reference (default: 1000, as the paper)")


def load_sam(args: argparse.Namespace):
    """Build the SAM model named by --model/--checkpoint/--device."""
    return build_sam(args.model, args.checkpoint, device=args.device)


def check_fit_steps(args: argparse.Namespace) -> int:
    """--fit-steps, checked (at least 1)."""
    steps = getattr(args, "fit_steps", 1000)
    if steps < 1:
        raise ValueError(f"--fit-steps must be at least 1, got {steps}")
    return steps


def make_persam(args: argparse.Namespace, sam=None):
    """A PerSAM or PerSAMF instance for --method."""
    from persam import PerSAM, PerSAMF

    cls = PerSAMF if getattr(args, "method", "persam") == "persam-f" else PerSAM
    steps = check_fit_steps(args)
    return cls(sam if sam is not None else load_sam(args), fit_steps=steps)


def add_reference_args(parser: argparse.ArgumentParser) -> None:
    """--ref-image/--ref-mask or --concept: what to look for."""
    ref = parser.add_argument_group("what to look for (a reference pair or a concept)")
    ref.add_argument("--ref-image", metavar="IMG", help="reference image showing your object")
    ref.add_argument("--ref-mask", metavar="PNG", help="mask of your object in the reference image "
                     "(any nonzero pixel is the object)")
    ref.add_argument("--concept", metavar="FILE", help="a concept saved by 'persam learn'")


def load_reference(args: argparse.Namespace):
    """Check --concept / --ref-image/--ref-mask before any model is loaded.

    Returns (concept, None) or (None, (reference image, reference mask)).
    """
    from persam_files import read_image as load_image
    from persam import Concept
    from persam.masks import load_mask
    from persam.prior import reference_grid

    if args.concept and (args.ref_image or args.ref_mask):
        raise ValueError("give either --concept or --ref-image/--ref-mask, not both")
    if not args.concept and not (args.ref_image and args.ref_mask):
        raise ValueError("give --ref-image and --ref-mask (or --concept FILE)")
    if args.concept:
        return Concept.load(args.concept), None
    ref_image = load_image(args.ref_image)
    ref_mask = load_mask(args.ref_mask, ref_image.shape[:2], name=args.ref_mask)
    reference_grid(ref_mask, args.ref_mask)
    return None, (ref_image, ref_mask)


def reference_concept(args: argparse.Namespace, persam, concept, reference):
    """The loaded concept, or one learned now from the reference pair; checked against the model."""
    from pathlib import Path

    if concept is None:
        concept = persam.learn(*reference, name=Path(args.ref_image).stem)
    persam.check_concept(concept)
    return concept


def unique_stems(images) -> None:
    """Outputs are named after their inputs: refuse two inputs with the same stem."""
    names = [image.stem for image in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs are named {duplicates[0]!r}; their outputs would overwrite each other")
