"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse

from sam_core import MODEL_TYPES, build_sam

from ..concept import METHODS
from ..timing import StageTimer

__all__ = ["StageTimer", "add_model_args", "check_fit_steps", "load_sam", "make_persam"]


def add_model_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="auto", choices=("auto",) + MODEL_TYPES,
                       help="SAM variant (default: read from the checkpoint)")
    group.add_argument("--checkpoint", required=True, metavar="CKPT",
                       help="SAM checkpoint file (e.g. mobile_sam.pt, sam_vit_h_4b8939.pth)")
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
