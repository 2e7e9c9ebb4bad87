"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

from sam_core import MODEL_TYPES, build_sam

METHOD_CHOICES = ("persam", "persam-f")


def add_model_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="auto", choices=("auto",) + MODEL_TYPES,
                       help="SAM variant (default: read from the checkpoint)")
    group.add_argument("--checkpoint", required=True, metavar="CKPT",
                       help="SAM checkpoint file (e.g. mobile_sam.pt, sam_vit_h_4b8939.pth)")
    group.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    if method:
        group.add_argument("--method", default="persam", choices=METHOD_CHOICES,
                           help="persam: training-free; persam-f: fits two mask weights on the "
                                "reference (default: persam)")
        group.add_argument("--fit-steps", type=int, default=1000, metavar="N",
                           help="PerSAM-F optimizer steps on the reference (default: 1000, as the paper)")


def load_sam(args: argparse.Namespace):
    """Build the SAM model named by --model/--checkpoint/--device."""
    return build_sam(args.model, args.checkpoint, device=args.device)


def make_persam(args: argparse.Namespace, sam=None):
    """A PerSAM or PerSAMF instance for --method."""
    from persam import PerSAM, PerSAMF

    cls = PerSAMF if getattr(args, "method", "persam") == "persam-f" else PerSAM
    steps = getattr(args, "fit_steps", 1000)
    if steps < 1:
        raise ValueError(f"--fit-steps must be at least 1, got {steps}")
    return cls(sam if sam is not None else load_sam(args), fit_steps=steps)


class StageTimer:
    """Accumulates wall-clock seconds per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.counts[stage] = self.counts.get(stage, 0) + 1

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


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
    from sam_core.image_io import load_image
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


def add_output_args(parser: argparse.ArgumentParser, overlay_help: str) -> None:
    """--out DIR, --overlay and the input images of the per-image commands."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overlay", action="store_true", help=overlay_help)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of images")


def prepare_image_run(args: argparse.Namespace):
    """For commands that process IMAGE_OR_DIR inputs with a reference: check everything cheap
    (reference, inputs, output names) before the model is loaded, then load it and get the
    concept. Returns (persam, concept, image paths, output folder)."""
    from pathlib import Path

    from persam.io import collect_images

    concept, reference = load_reference(args)
    images = collect_images(args.inputs)
    unique_stems(images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    persam = make_persam(args)
    return persam, reference_concept(args, persam, concept, reference), images, out
