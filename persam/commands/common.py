"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import re
import time
from contextlib import contextmanager

from sam_core import MODEL_TYPES, build_sam

from .support import DefaultInt, DefaultStr

METHOD_CHOICES = ("persam", "persam-f")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def device_name(text: str) -> str:
    """--device: cpu, cuda, cuda:N or mps, checked before anything is loaded."""
    value = text.strip().lower()
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N (N = GPU number) or mps")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="auto", choices=("auto",) + MODEL_TYPES,
                       help="SAM variant (default: read from the checkpoint)")
    group.add_argument("--checkpoint", required=True, metavar="CKPT",
                       help="SAM checkpoint file (e.g. mobile_sam.pt, sam_vit_h_4b8939.pth)")
    group.add_argument("--device", default="cpu", type=device_name,
                       help="cpu, cuda, cuda:N or mps (default: cpu)")
    if method:
        group.add_argument("--method", default=DefaultStr("persam"), choices=METHOD_CHOICES,
                           help="persam: training-free; persam-f: fits two mask weights on the "
                                "reference (default: persam; with a saved concept, the concept's "
                                "method is used and a different --method is ignored with a warning)")
        group.add_argument("--fit-steps", type=positive_int, default=DefaultInt(1000), metavar="N",
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
