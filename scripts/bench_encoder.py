#!/usr/bin/env python
"""Time one image-encoder pass with the encoders' linear layers and convolutions on oneDNN's
convolution (the default) and on PyTorch's default routes (BLAS for the linear layers),
interleaved in one process on the same input, and set it against the arithmetic of the pass
and this machine's matrix-product rate, measured in the same run:

    python scripts/bench_encoder.py --random vit_t [--threads 2] [--repeats 9]
    python scripts/bench_encoder.py --checkpoint mobile_sam.pt --image photo.jpg

See ``sam_core/runtime.py`` (``Linear`` and ``conv2d`` in ``sam_core/common.py``). Both sides
run under ``SamEngine``'s process settings; the embeddings of the two are compared as well.
Timings on a shared machine are noisy: only the ratio of the medians from the same run means
anything.

The arithmetic line counts the pass's matrix products, convolutions and attention products
(``persam.timing.product_flops``) and divides by the float32 rate of a large matrix product
(4096 x 1024 x 1024, the fastest of BLAS and two oneDNN routes) timed here: the time a pass
would take if all its arithmetic ran as fast as a large matrix product, the fastest
arithmetic torch does on a CPU. The rest of a pass is elementwise work and smaller, slower
products.
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

from persam.timing import product_flops  # noqa: E402
from sam_core import (SamEngine, build_sam, load_image, onednn_linear_enabled,  # noqa: E402
                      preprocess_image, set_onednn_linear)


def matmul_rate(size: tuple[int, int, int] = (4096, 1024, 1024), repeats: int = 9) -> float:
    """Float32 FLOP/s of an (M x K) @ (K x N) product on this machine now: the median of
    ``repeats`` timings, the fastest of torch's matmul (BLAS), oneDNN's matmul and oneDNN's
    1x1 convolution of the M rows (the route of the encoders' linear layers)."""
    rows, inner, cols = size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inner, generator=generator)
    weight = torch.randn(cols, inner, generator=generator)
    bias = torch.zeros(cols)
    products = [lambda: x @ weight.T]
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], ""))
    if onednn_linear_enabled():
        pixels, kernel = x.view(1, rows, 1, inner).permute(0, 3, 1, 2), weight.view(cols, inner, 1, 1)
        products.append(lambda: torch.ops.aten.mkldnn_convolution(pixels, kernel, bias, [0, 0], [1, 1], [1, 1], 1))
    best = 0.0
    with torch.no_grad():
        for product in products:
            product()  # warm-up
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                product()
                seconds.append(time.perf_counter() - start)
            best = max(best, 2 * rows * inner * cols / statistics.median(seconds))
    return best


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
    with torch.no_grad():
        flops = product_flops(lambda: encoder(batch))
    rate = matmul_rate()
    difference = (outputs[True] - outputs[False]).abs().max().item()
    print(f"{sam.model_type} encoder, torch threads {torch.get_num_threads()}, {args.repeats} interleaved passes per side")
    print(f"  PyTorch default routes  median {blas_s * 1000:8.1f} ms")
    print(f"  oneDNN convolution      median {onednn_s * 1000:8.1f} ms   ({blas_s / onednn_s:.2f}x)")
    print(f"  max abs difference of the embeddings {difference:.2e} (values up to "
          f"{outputs[False].abs().max().item():.2f})")
    at_rate_s = flops / rate
    print(f"  arithmetic: {flops / 1e9:.1f} GFLOP per pass in products, convolutions and attention; "
          f"this machine's float32 matrix product now: {rate / 1e9:.0f} GFLOP/s, {at_rate_s * 1000:.0f} ms "
          f"per pass at that rate; the oneDNN median runs at {at_rate_s / onednn_s:.0%} of it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
