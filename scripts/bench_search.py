#!/usr/bin/env python
"""Benchmark the album search, in one run on one machine:

    python scripts/bench_search.py --random vit_t [--images 12] [--ray-actors 2] [--json FILE]
    python scripts/bench_search.py --checkpoint mobile_sam.pt --album DIR --concept a.pt --concept b.pt

(a) first search of the album with one concept and an empty ``--index`` (every image encoded);
(b) a second concept over the same album with that index (no encoder pass);
(c) the same first search (no index) in this process vs ``--ray`` on a local Ray started by the
    script (its start-up timed apart; actor model loading counted in the search).

It also counts the arithmetic behind (a) and (b) on the first 12 album images
(``persam.timing.product_flops``: matrix products, convolutions, attention): the encoder pass
and the second concept's ``find`` on the embeddings (b) read from the index, with how many
candidates ``find`` decoded. (b) saves only the
encoder, so at equal FLOP rates (b) is (E + F) / F times faster than (a), E and F the encoder's
and ``find``'s GFLOP per image.

(a) and (b) share one loaded model (not timed); (c) loads the model inside each timed search,
on both sides. Without ``--album`` the album is ``--images`` generated 640x480 photos (textured
background, a few coloured objects); without ``--concept`` the concepts are learned from
generated references. Timings on a shared machine are noisy: compare ratios from the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from persam import Concept, PerSAM, build_sam  # noqa: E402
from persam.find import detect  # noqa: E402
from persam.search import EmbeddingIndex, image_content_key, list_album, search  # noqa: E402
from persam.timing import product_flops  # noqa: E402
from sam_core import ImageReadError, load_image  # noqa: E402


def generated_album(folder: Path, count: int, seed: int = 0) -> Path:
    """Example-like photos: smooth coloured background with noise, and 1-3 objects."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:480, 0:640]
    for index in range(count):
        base = rng.integers(40, 200, 3)
        gradient = (xs[..., None] * rng.uniform(-0.1, 0.1, 3) + ys[..., None] * rng.uniform(-0.1, 0.1, 3))
        image = np.clip(base + gradient + rng.normal(0, 12, (480, 640, 3)), 0, 255)
        for _ in range(int(rng.integers(1, 4))):
            colour = rng.integers(0, 256, 3)
            cy, cx, r = int(rng.integers(80, 400)), int(rng.integers(80, 560)), int(rng.integers(30, 90))
            image[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = colour
        sub = folder / f"set{index % 3}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(sub / f"photo_{index:03d}.jpg", quality=90)
    return folder


def generated_concepts(persam: PerSAM, folder: Path) -> list[Path]:
    paths = []
    ys, xs = np.mgrid[0:480, 0:640]
    for name, colour in (("ball", (200, 40, 40)), ("plate", (40, 40, 200))):
        image = np.full((480, 640, 3), 120, np.uint8)
        mask = (ys - 240) ** 2 + (xs - 320) ** 2 < 70 ** 2
        image[mask] = colour
        paths.append(persam.learn(image, mask, name=name).save(folder / f"{name}.pt"))
    return paths


def arithmetic(persam: PerSAM, album: Path, index: Path, concept: Concept, images: int = 12) -> dict:
    """GFLOP per image of the encoder and of ``find`` on the first ``images`` readable album
    images, with the candidates ``find`` found and decoded there. ``find`` runs on the
    embeddings (b) read from ``index``; the encoder's count does not depend on the image (every
    input is resized and padded to the same size), so it is counted on the first one only."""
    store = EmbeddingIndex(index, persam.fingerprint)
    encoder, find, candidates, decoded, counted = 0.0, 0.0, 0, 0, 0
    for item in list_album([album]):
        try:
            image = load_image(item.path)
        except ImageReadError:
            continue
        embedding = store.get(image_content_key(image), tuple(image.shape[:2]))
        if embedding is None:
            raise SystemExit(f"{item.path} is not in the index {index}")
        if counted == 0:
            with torch.no_grad():
                encoder = product_flops(lambda: persam.engine.encode(image)) / 1e9
        stats: dict = {}
        with torch.no_grad():
            find += product_flops(lambda: detect(persam.engine, embedding, concept, stats=stats)) / 1e9
        candidates, decoded, counted = candidates + stats["candidates"], decoded + stats["decoded"], counted + 1
        if counted == images:
            break
    if counted == 0:
        raise SystemExit(f"no readable image in {album}")
    return {"images_counted": counted, "encoder_gflop": encoder, "find_gflop": find / counted,
            "find_candidates": candidates / counted, "find_decoded": decoded / counted}


def timed(label: str, function):
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a SAM checkpoint file")
    source.add_argument("--random", metavar="MODEL", help="write a seeded random checkpoint of MODEL (e.g. vit_t)")
    parser.add_argument("--album", help="folder of photos (default: generated)")
    parser.add_argument("--images", type=int, default=12, help="generated album size (default: 12)")
    parser.add_argument("--concept", action="append", help="two concept files (default: generated)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--ray-cpus", type=float, default=1.0)
    parser.add_argument("--no-ray", action="store_true", help="skip (c)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in this process (default: torch's choice). On a machine "
                             "shared with other busy processes, OpenMP threads waiting for each other "
                             "slow the decoder's small operations several times; 1 avoids that")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    checkpoint = args.checkpoint
    if args.random:
        from parity import save_random_checkpoint

        checkpoint = work / f"random_{args.random}.pth"
        save_random_checkpoint(args.random, checkpoint, seed=0)
    album = Path(args.album) if args.album else generated_album(work / "album", args.images)
    persam = PerSAM(build_sam("auto", checkpoint), cache_size=0)
    concepts = [Path(c) for c in args.concept] if args.concept else generated_concepts(persam, work)
    if len(concepts) < 2:
        parser.error("give two --concept files (or none)")
    common = dict(batch_size=args.batch, progress=False)
    print(f"album {album}, model {persam.model_type}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    first, seconds_a = timed("(a) first search, 1 concept, index filled",
                             lambda: search([album], concepts[:1], work / "a", persam=persam,
                                            index=work / "index", **common))
    second, seconds_b = timed("(b) second concept, from the index",
                              lambda: search([album], concepts[1:2], work / "b", persam=persam,
                                             index=work / "index", **common))
    assert second.encoded == 0 and second.index_hits == first.images, "the index was not used"
    flops = arithmetic(persam, album, work / "index", Concept.load(concepts[1]))
    entries = list((work / "index").rglob("*.pt"))
    index_bytes = sum(e.stat().st_size for e in entries) / max(1, len(entries))
    numbers = {"threads": torch.get_num_threads(), "load_average_start": os.getloadavg()[0],
               "images": first.images, "model": persam.model_type, "a_first_search_s": seconds_a,
               "b_second_concept_with_index_s": seconds_b, "speedup_b_vs_a": seconds_a / seconds_b,
               "index_bytes_per_image": index_bytes, **flops}
    del persam
    if not args.no_ray:
        import ray

        _, local_seconds = timed("(c) local search (model load included)",
                                 lambda: search([album], concepts[:1], work / "c_local", checkpoint=checkpoint,
                                                **common))
        _, start_seconds = timed("    Ray start", lambda: ray.init(include_dashboard=False, log_to_driver=False,
                                                                    configure_logging=False))
        _, ray_seconds = timed(f"(c) --ray, {args.ray_actors} actors x {args.ray_cpus:g} CPU",
                               lambda: search([album], concepts[:1], work / "c_ray", checkpoint=checkpoint,
                                              ray=True, ray_actors=args.ray_actors, ray_cpus=args.ray_cpus,
                                              **common))
        ray.shutdown()
        same = (work / "c_local" / "results.jsonl").read_text() == (work / "c_ray" / "results.jsonl").read_text()
        numbers.update(local_s=local_seconds, ray_start_s=start_seconds, ray_s=ray_seconds,
                       ray_actors=args.ray_actors, ray_cpus=args.ray_cpus, ray_rows_equal_local=same)
    print()
    print(f"| {numbers['images']} images, {numbers['model']} | seconds | per image |")
    print("|---|---|---|")
    n = numbers["images"]
    print(f"| (a) first search, 1 concept (encoder + decoder, index filled) | {seconds_a:.1f} | {seconds_a / n:.2f} |")
    print(f"| (b) second concept with --index | {seconds_b:.1f} | {seconds_b / n:.2f} "
          f"({numbers['speedup_b_vs_a']:.1f}x faster) |")
    if "ray_s" in numbers:
        print(f"| (c) local, model load included | {numbers['local_s']:.1f} | {numbers['local_s'] / n:.2f} |")
        print(f"| (c) --ray, {args.ray_actors} actors x {args.ray_cpus:g} CPU (+{numbers['ray_start_s']:.1f} s "
              f"Ray start) | {numbers['ray_s']:.1f} | {numbers['ray_s'] / n:.2f} |")
        print(f"rows equal: {numbers['ray_rows_equal_local']}")
    print(f"index: {index_bytes / 2**20:.2f} MiB per image")
    encoder_gflop, find_gflop = numbers["encoder_gflop"], numbers["find_gflop"]
    print(f"arithmetic per image (mean of {numbers['images_counted']}): encoder {encoder_gflop:.1f} GFLOP, "
          f"find {find_gflop:.1f} GFLOP ({numbers['find_decoded']:.1f} of {numbers['find_candidates']:.1f} "
          f"candidates decoded); at equal FLOP rates (b) would be "
          f"{(encoder_gflop + find_gflop) / find_gflop:.1f}x faster than (a)")
    if args.json:
        from persam_files import write_json

        write_json(args.json, numbers)


if __name__ == "__main__":
    main()
