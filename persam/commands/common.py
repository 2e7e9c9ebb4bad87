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
