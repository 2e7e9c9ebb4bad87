#!/usr/bin/env python
"""Time one image-encoder pass with the encoders' linear layers on oneDNN (the default) and on
PyTorch's default BLAS, interleaved in one process on the same input:

    python scripts/bench_encoder.py --random vit_t [--threads 2] [--repeats 9]
    python scripts/bench_encoder.py --checkpoint mobile_sam.pt --image photo.jpg

See ``sam_core/runtime.py`` (``Linear`` in ``sam_core/common.py``). Both sides run under
``SamEngine``'s process settings; the embeddings of the two are compared as well. Timings on
a shared machine are noisy: only the ratio of the medians from the same run means anything.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sam_core import (SamEngine, build_sam, load_image, onednn_linear_enabled,  # noqa: E402
                      preprocess_image, set_onednn_linear)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="SAM checkpoint (path or model name)")
    source.add_argument("--random", choices=("vit_t", "vit_b"), help="seeded random weights of this type")
    parser.add_argument("--image", default=str(REPO / "examples/perseg-mini/Images/cat/00.jpg"),
                        help="input image (default: an example image)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=9, help="timed passes per side (default 9)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not onednn_linear_enabled():
        print("this PyTorch build has no usable oneDNN linear: nothing to compare", file=sys.stderr)
        return 1
    if args.random:
        torch.manual_seed(0)
        sam = build_sam(model_type=args.random)  # no checkpoint: seeded random weights
    else:
        sam = build_sam(checkpoint=args.checkpoint)
    SamEngine(sam)  # applies the process settings every persam run gets (runtime.py)
    encoder = sam.image_encoder
    batch = preprocess_image(load_image(args.image))
    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for onednn in (True, False):  # warm-up, and the outputs to compare
                set_onednn_linear(onednn)
                outputs[onednn] = encoder(batch)
            for _ in range(args.repeats):
                for onednn in (True, False):
                    set_onednn_linear(onednn)
                    start = time.perf_counter()
                    encoder(batch)
                    seconds[onednn].append(time.perf_counter() - start)
    finally:
        set_onednn_linear(True)
    onednn_s, blas_s = (statistics.median(seconds[key]) for key in (True, False))
    difference = (outputs[True] - outputs[False]).abs().max().item()
    print(f"{sam.model_type} encoder, torch threads {torch.get_num_threads()}, {args.repeats} interleaved passes per side")
    print(f"  default BLAS linear  median {blas_s * 1000:8.1f} ms")
    print(f"  oneDNN linear        median {onednn_s * 1000:8.1f} ms   ({blas_s / onednn_s:.2f}x)")
    print(f"  max abs difference of the embeddings {difference:.2e} (values up to "
          f"{outputs[False].abs().max().item():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
