#!/usr/bin/env python
"""Frames per second of video tracking with 1 and 3 objects, encoder and decoder timed apart.

    python scripts/bench_video.py --checkpoint mobile_sam.pt [--frames 6] [--size 480x854]
        [--objects 1,3] [--method persam] [--json bench_video.json]

A synthetic video (moving coloured shapes, DAVIS 480p size by default) is tracked once per
object count with :func:`benchmark_tracking` (below). Each frame costs one encoder pass
whatever the number of objects, plus three mask-decoder calls per object; the table shows
per-frame medians (frames 1.., frame 0 is the reference) of:

    encode  image encoder            (independent of the object count)
    decode  mask decoder + upsampling (grows with the object count)
    prior   similarity maps, prompt points
    total   whole step; fps = 1 / total
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import numpy as np

COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230))


def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``frames`` RGB (H, W, 3) uint8 frames of three shapes drifting over a noisy background,
    and the first frame's label map with ids 1, 2, 3."""
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    images, first_labels = [], None
    for t in range(frames):
        image = background.copy()
        labels = np.zeros((height, width), np.uint8)
        shapes = (
            (np.abs(yy - height * 0.3) < height * 0.12) & (np.abs(xx - width * (0.2 + 0.02 * t)) < width * 0.08),
            (yy - height * (0.6 + 0.01 * t)) ** 2 + (xx - width * 0.5) ** 2 < (height * 0.15) ** 2,
            (np.abs(yy - height * 0.7) < height * 0.08) & (np.abs(xx - width * (0.8 - 0.015 * t)) < width * 0.1),
        )
        for object_id, (shape, colour) in enumerate(zip(shapes, COLOURS), start=1):
            image[shape] = colour
            labels[shape] = object_id
        images.append(image)
        if t == 0:
            first_labels = labels
    return images, first_labels


def benchmark_tracking(engine, frames: Sequence, label_map: np.ndarray, method: str = "persam",
                       fit_steps: int | None = None) -> dict:
    """Time :class:`persam.Tracker` over ``frames`` (frame 0 is the reference, needs >= 2 frames).

    Returns per-frame medians over frames 1.. of the seconds spent in the image encoder
    ("encode_s"), in the mask decoder and mask upsampling ("decode_s"), in similarity maps and
    prompts ("prior_s") and in composing the label map ("compose_s"), plus "total_s",
    "frames_per_s", "decoder_calls_per_frame", "encoder_calls_per_frame", the number of objects
    and frames, and the frame-0 set-up seconds ("start_s", including PerSAM-F fitting).
    """
    from persam import Tracker
    from persam_files import read_image

    frames = list(frames)
    if len(frames) < 2:
        raise ValueError("benchmark_tracking needs at least two frames")
    tracker = Tracker(engine, method=method, fit_steps=fit_steps)
    encoder = tracker.engine.sam.image_encoder
    encoder_calls = [0]
    hook = encoder.register_forward_hook(lambda *_: encoder_calls.__setitem__(0, encoder_calls[0] + 1))
    try:
        images = [read_image(frame) for frame in frames]  # decoding files is not tracking work
        begin = time.perf_counter()
        tracker.start(images[0], label_map)
        start_seconds = time.perf_counter() - begin
        encoder_calls[0] = 0
        per_frame: list[dict[str, float]] = []
        calls = []
        for image in images[1:]:
            begin = time.perf_counter()
            tracker.step(image)
            per_frame.append({**tracker.frame_seconds, "total": time.perf_counter() - begin})
            calls.append(tracker.decoder_calls)
    finally:
        hook.remove()

    def median(stage: str) -> float:
        return round(statistics.median(frame[stage] for frame in per_frame), 4)

    total = median("total")
    return {
        "method": method,
        "objects": len(tracker.objects),
        "frames": len(images),
        "start_s": round(start_seconds, 4),
        "encode_s": median("encode"),
        "decode_s": median("decode"),
        "prior_s": median("prior"),
        "compose_s": median("compose"),
        "total_s": total,
        "frames_per_s": round(1.0 / total, 3) if total > 0 else float("inf"),
        "decoder_calls_per_frame": statistics.median(calls),
        "encoder_calls_per_frame": encoder_calls[0] / len(per_frame),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark persam video tracking (frames/s, encoder vs decoder).")
    parser.add_argument("--checkpoint", required=True, help="SAM checkpoint (e.g. mobile_sam.pt)")
    parser.add_argument("--model", default="auto", help="SAM variant (default: read from the checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--method", default="persam", choices=("persam", "persam-f"))
    parser.add_argument("--frames", type=int, default=6, help="frames per run, reference included (default 6)")
    parser.add_argument("--size", default="480x854", help="frame size HxW (default 480x854, DAVIS 480p)")
    parser.add_argument("--objects", default="1,3", help="object counts to compare (1..3, default 1,3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from persam_files import write_json
    from sam_core import SamEngine, build_sam

    height, width = (int(v) for v in args.size.lower().split("x"))
    counts = [int(v) for v in args.objects.split(",")]
    if any(not 1 <= c <= 3 for c in counts) or args.frames < 2:
        parser.error("--objects must be in 1..3 and --frames at least 2")
    engine = SamEngine(build_sam(args.model, args.checkpoint, device=args.device))
    frames, labels = synthetic_video(args.frames, height, width)
    benchmark_tracking(engine, frames[:2], np.where(labels == 1, 1, 0), method=args.method)  # warm-up
    rows = []
    for count in counts:
        subset = np.where(labels <= count, labels, 0)
        rows.append(benchmark_tracking(engine, frames, subset, method=args.method))
    print(f"{engine.model_type}, {args.method}, {width}x{height}, {args.frames} frames, "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'objects':>7} {'encode s':>9} {'decode s':>9} {'prior s':>8} {'total s':>8} {'fps':>6} "
          f"{'dec calls':>9}")
    for row in rows:
        print(f"{row['objects']:>7} {row['encode_s']:>9.3f} {row['decode_s']:>9.3f} {row['prior_s']:>8.3f} "
              f"{row['total_s']:>8.3f} {row['frames_per_s']:>6.2f} {row['decoder_calls_per_frame']:>9}")
    if args.json:
        write_json(args.json, {"model": engine.model_type, "size": [height, width], "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
