"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import re
import warnings

from sam_core import DEFAULT_MODEL, MODEL_TYPES, build_sam

from ..concept import METHODS
from ..timing import StageTimer
from .support import DefaultInt, DefaultStr, given, positive_int

__all__ = ["StageTimer", "add_model_args", "check_fit_steps", "load_sam", "make_persam"]

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def device_name(text: str) -> str:
    """--device: cpu, cuda, cuda:N or mps, checked before anything is loaded."""
    value = text.strip().lower()
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N (N = GPU number) or mps")
    return value


def add_model_args(parser: argparse.ArgumentParser, method: bool = True, concept: bool = False) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="auto", choices=("auto",) + MODEL_TYPES,
                       help="SAM variant (default: read from the checkpoint)")
    group.add_argument("--checkpoint", default=DEFAULT_MODEL, metavar="CKPT",
                       help="a model name (vit_t, vit_b, vit_l, vit_h: downloaded and checksummed on "
                            "first use, see 'persam models'), a checkpoint file (e.g. mobile_sam.pt), "
                            "a transformers SamModel folder or a Hugging Face hub id "
                            f"(default: {DEFAULT_MODEL}, MobileSAM, 40 MB)")
    group.add_argument("--device", default="cpu", type=device_name,
                       help="cpu, cuda, cuda:N or mps (default: cpu)")
    if method:  # concept: the command also takes a saved concept (--concept), whose method wins
        concept_note = ("; with a saved concept, the concept's method is used and a different "
                        "--method is ignored with a warning") if concept else ""
        group.add_argument("--method", default=DefaultStr("persam"), choices=METHODS,
                           help="persam: training-free; persam-f: fits two mask weights on the "
                                f"reference (default: persam{concept_note})")
        group.add_argument("--fit-steps", type=positive_int, default=DefaultInt(1000), metavar="N",
                           help="PerSAM-F optimizer steps on the reference (default: 1000, as the paper)")


def load_sam(args: argparse.Namespace):
    """Build the SAM model named by --model/--checkpoint/--device."""
    return build_sam(args.model, args.checkpoint, device=args.device)


def check_fit_steps(args: argparse.Namespace) -> int:
    """--fit-steps, checked (at least 1)."""
    steps = getattr(args, "fit_steps", 1000)
    if steps < 1:
        raise ValueError(f"--fit-steps must be at least 1, got {steps}")
    return int(steps)  # a DefaultInt (see support.DefaultValue) becomes a plain int


def make_persam(args: argparse.Namespace, sam=None):
    """A PerSAM or PerSAMF instance for --method."""
    from persam import PerSAM, PerSAMF

    cls = PerSAMF if getattr(args, "method", "persam") == "persam-f" else PerSAM
    steps = check_fit_steps(args)
    return cls(sam if sam is not None else load_sam(args), fit_steps=steps)


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def parse_point(text: str) -> tuple[float, float]:
    """'X,Y' (pixels) -> (x, y)."""
    return _numbers(text, 2, "X,Y in pixels")  # type: ignore[return-value]


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'X0,Y0,X1,Y1' (pixels) -> (x0, y0, x1, y1)."""
    return _numbers(text, 4, "X0,Y0,X1,Y1 in pixels")  # type: ignore[return-value]


def add_reference_prompt_args(group) -> None:
    """--ref-point / --ref-negative / --ref-box: the reference mask made by SAM from clicks
    (shared by learn, segment and find)."""
    group.add_argument("--ref-point", action="append", type=parse_point, metavar="X,Y",
                       help="instead of --ref-mask: a pixel on your object in --ref-image; SAM makes "
                            "the mask (repeatable)")
    group.add_argument("--ref-negative", action="append", type=parse_point, metavar="X,Y",
                       help="a pixel that is NOT your object (repeatable; with --ref-point or --ref-box)")
    group.add_argument("--ref-box", type=parse_box, metavar="X0,Y0,X1,Y1",
                       help="instead of --ref-mask: a box around your object in --ref-image")


def has_reference_prompts(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "ref_point", None) or getattr(args, "ref_negative", None)
                or getattr(args, "ref_box", None))


def clicked_reference_mask(persam, image, args: argparse.Namespace, image_label: str):
    """The reference mask SAM makes from --ref-point/--ref-negative/--ref-box on ``image``."""
    import numpy as np

    from persam.masks import MaskError

    positives = list(args.ref_point or [])
    negatives = list(args.ref_negative or [])
    points = np.array(positives + negatives, dtype=np.float64).reshape(-1, 2)
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    mask = persam.reference_mask(image, points if len(points) else None, labels if len(points) else None,
                                 args.ref_box)
    if not mask.any():
        raise MaskError(f"the reference prompts on {image_label} gave an empty mask; click elsewhere on the object")
    return mask


def add_reference_args(parser: argparse.ArgumentParser) -> None:
    """--ref-image with --ref-mask or clicks (--ref-point/--ref-negative/--ref-box), or --concept:
    what to look for (segment and find)."""
    ref = parser.add_argument_group("what to look for (a reference pair, clicks, or a concept)")
    ref.add_argument("--ref-image", metavar="IMG", help="reference image showing your object")
    ref.add_argument("--ref-mask", metavar="PNG", help="mask of your object in the reference image "
                     "(any nonzero pixel is the object; greyscale, palette or 1-bit, not a photo). "
                     "It is never processed as an input when it sits in an input folder")
    add_reference_prompt_args(ref)
    ref.add_argument("--concept", metavar="FILE", help="a concept saved by 'persam learn'")


def check_reference_args(args: argparse.Namespace) -> None:
    """--concept, or --ref-image with either --ref-mask or clicks (no file is read here)."""
    clicked = has_reference_prompts(args)
    if args.concept and (args.ref_image or args.ref_mask or clicked):
        raise ValueError("give either --concept or --ref-image with --ref-mask/--ref-point, not both")
    if args.concept:
        return
    if args.ref_mask and clicked:
        raise ValueError("give either --ref-mask or --ref-point/--ref-box, not both")
    if not (args.ref_image and (args.ref_mask or clicked)):
        raise ValueError("give --ref-image with --ref-mask (or --ref-point X,Y), or --concept FILE")


# How each command uses a concept, for the warning below ("so it segments with persam-f").
_USES = {"find": "finds", "search": "searches"}


def warn_about_ignored_options(args: argparse.Namespace, concept, source: str) -> None:
    """A saved concept fixes the method (and its fitted weights): say so when asked otherwise."""
    if given(getattr(args, "method", None)) and args.method != concept.method:
        warnings.warn(f"--method {args.method} ignored: {source} was learned with {concept.method}, "
                      f"so it {_USES.get(getattr(args, 'command', None), 'segments')} with {concept.method}")
    if given(getattr(args, "fit_steps", None)):
        warnings.warn(f"--fit-steps ignored: {source} is already learned")


def load_reference(args: argparse.Namespace):
    """Check --concept / --ref-image with --ref-mask or clicks before any model is loaded.

    Returns (concept, None) or (None, (reference image, reference mask)); the mask is None
    when it is to be made from the clicks once the model is loaded (see
    :func:`reference_concept`).
    """
    from persam_files import read_image
    from persam import Concept
    from persam.masks import load_mask
    from persam.model import check_image_size
    from persam.prior import reference_grid

    check_reference_args(args)
    if args.concept:
        concept = Concept.load(args.concept)
        warn_about_ignored_options(args, concept, f"concept {args.concept}")
        return concept, None
    ref_image = read_image(args.ref_image)
    check_image_size(ref_image, args.ref_image)
    if has_reference_prompts(args):
        return None, (ref_image, None)
    ref_mask = load_mask(args.ref_mask, ref_image.shape[:2], name=args.ref_mask)
    reference_grid(ref_mask, args.ref_mask)
    return None, (ref_image, ref_mask)


def clicked_mask_path(out, ref_image: str):
    """Where the reference mask made from clicks is written, so people can see what was used."""
    from pathlib import Path

    return Path(out) / f"{Path(ref_image).stem}_ref_mask.png"


def reference_concept(args: argparse.Namespace, persam, concept, reference, out=None):
    """The loaded concept, or one learned now from the reference pair (its mask made by SAM from
    the clicks first, and written to ``out``/<ref stem>_ref_mask.png); checked against the model."""
    from pathlib import Path

    from persam_files import save_mask_png
    from persam.prior import reference_grid

    if concept is None:
        ref_image, ref_mask = reference
        if ref_mask is None:
            ref_mask = clicked_reference_mask(persam, ref_image, args, args.ref_image)
            reference_grid(ref_mask, f"the mask SAM made from your --ref-point/--ref-box on {args.ref_image}")
            if out is not None:
                save_mask_png(clicked_mask_path(out, args.ref_image), ref_mask)
        concept = persam.learn(ref_image, ref_mask, name=Path(args.ref_image).stem)
    persam.check_concept(concept)
    return concept


def add_output_args(parser: argparse.ArgumentParser, overlay_help: str) -> None:
    """--out DIR, --overlay and the input images of the per-image commands (segment, find)."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created when the first result is written)")
    parser.add_argument("--overlay", action="store_true", help=overlay_help)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="images or folders of images (folders are searched recursively)")


def prepare_image_run(args: argparse.Namespace):
    """For commands that process IMAGE_OR_DIR inputs with a reference (segment, find): check
    everything cheap (reference arguments, --out, the inputs and their output names, the
    reference files) before the model is loaded, then load it and get the concept. Nothing is
    written here except the mask made from clicks. Returns (persam, concept, input images
    (:class:`support.InputImage`), output folder)."""
    from .support import check_output_dir, collect_inputs

    check_reference_args(args)
    out = check_output_dir(args.out)
    suffixes = (".png", "_overlay.jpg") if args.overlay else (".png",)
    images = collect_inputs(args.inputs, out=out, exclude=[args.ref_mask, args.concept], output_suffixes=suffixes)
    concept, reference = load_reference(args)
    persam = make_persam(args)
    return persam, reference_concept(args, persam, concept, reference, out), images, out
