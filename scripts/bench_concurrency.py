#!/usr/bin/env python
"""Three ways to spend the cores on several images, interleaved in one process on the same
images: one image at a time with all torch threads (what persam does), one encoder pass on a
batch of images (``SamEngine.encode_batch``, all threads), and one image per Python thread at
once, each pass on one torch thread:

    python scripts/bench_concurrency.py --random vit_t [--threads 2] [--rounds 5]
    python scripts/bench_concurrency.py --checkpoint mobile_sam.pt --images a.jpg b.jpg

Each round encodes the same ``threads`` images (the examples' first images by default) the
three ways, in turn. The report gives the median seconds per image of each way and their
ratios to the first. Timings on a shared machine are noisy: only ratios from one run mean
anything. On a 2-core machine the two alternatives were within a few percent of the first
(README, Speed); with many cores and a small model, one image per thread may pay off.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sam_core import SamEngine, build_sam, load_image  # noqa: E402

EXAMPLES = REPO / "examples/perseg-mini/Images"


def one_at_a_time(engine: SamEngine, images: list, threads: int) -> list[torch.Tensor]:
    torch.set_num_threads(threads)
    return [engine.encode(image).features for image in images]


def one_batch(engine: SamEngine, images: list, threads: int) -> list[torch.Tensor]:
    torch.set_num_threads(threads)
    return [embedding.features for embedding in engine.encode_batch(images)]


def one_per_thread(engine: SamEngine, images: list, threads: int) -> list[torch.Tensor]:
    """Each image on its own Python thread; torch ops release the GIL, one torch thread each."""
    torch.set_num_threads(1)
    features: list[torch.Tensor | None] = [None] * len(images)
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with torch.no_grad():
                features[index] = engine.encode(images[index]).features
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(error)

    workers = [threading.Thread(target=work, args=(index,)) for index in range(len(images))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    torch.set_num_threads(threads)
    if failures:
        raise failures[0]
    return features  # type: ignore[return-value]


WAYS = {
    "one image at a time, all threads": one_at_a_time,
    "one batch of all images": one_batch,
    "one image per thread, at once": one_per_thread,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="SAM checkpoint (path or model name)")
    source.add_argument("--random", choices=("vit_t", "vit_b"), help="seeded random weights of this type")
    parser.add_argument("--images", nargs="+", help="images (default: one example image per thread)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads, and images per round (default: torch's, here %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    paths = args.images or sorted(EXAMPLES.glob("*/00.jpg"))
    paths = [paths[i % len(paths)] for i in range(args.threads)]
    if args.random:
        torch.manual_seed(0)
        sam = build_sam(model_type=args.random)  # no checkpoint: seeded random weights
    else:
        sam = build_sam(checkpoint=args.checkpoint)
    engine = SamEngine(sam)
    images = [load_image(path) for path in paths]
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    outputs: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for name, way in WAYS.items():  # warm-up, and the outputs to compare
            outputs[name] = way(engine, images, args.threads)
        for _ in range(args.rounds):
            for name, way in WAYS.items():
                start = time.perf_counter()
                way(engine, images, args.threads)
                seconds[name].append((time.perf_counter() - start) / len(images))
    first = next(iter(WAYS))
    print(f"{sam.model_type} encoder, {len(images)} images per round, {args.threads} torch threads, "
          f"{args.rounds} interleaved rounds; median seconds per image")
    base = statistics.median(seconds[first])
    for name in WAYS:
        median = statistics.median(seconds[name])
        difference = max((a - b).abs().max().item() for a, b in zip(outputs[name], outputs[first]))
        print(f"  {name:<34} {median:7.3f} s   {base / median:5.2f}x   "
              f"(max abs difference from the first {difference:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
