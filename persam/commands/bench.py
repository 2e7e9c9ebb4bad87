"""persam bench: where the time goes, per stage, on a PerSeg-layout folder."""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import torch

from .common import StageTimer, add_model_args, make_persam
from .support import check_output_file, non_negative_int, plural, progress_bar

HELP = "time PerSAM / PerSAM-F per stage (encode, location prior, decode+refine, fit)"
STAGES = ("encode", "prior", "decode", "fit")
STAGE_LABELS = {"encode": "encode (image encoder)", "prior": "location prior",
                "decode": "decode + refine", "fit": "fit (PerSAM-F)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help=HELP,
        description=HELP + ". Learns each object of a PerSeg-layout folder from its reference and "
        "segments its images, timing every stage; prints a table (and JSON with --json).")
    add_model_args(parser)
    parser.add_argument("--data", required=True, metavar="DIR", help="PerSeg-layout folder")
    parser.add_argument("--ref-idx", default="00", help="reference image index (default: 00)")
    parser.add_argument("--objects", type=non_negative_int, default=0, help="use only the first N objects (0: all)")
    parser.add_argument("--find-candidates", type=non_negative_int, default=8, metavar="N",
                        help="also time 'find' with at most N candidates on each image's cached "
                             "embedding, against segment after the encoder (default: 8; 0: skip)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.set_defaults(func=run)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run(args: argparse.Namespace) -> int:
    from persam.find import detect
    from persam_files import write_json
    from persam_datasets import PerSegDataset

    dataset = PerSegDataset(args.data, ref_idx=args.ref_idx)
    objects = dataset.objects[: args.objects or None]
    if not objects:
        raise FileNotFoundError(f"PerSeg folder {args.data} has no objects")
    if args.json:
        check_output_file(args.json, "--json")
    start_load = time.perf_counter()
    persam = make_persam(args)
    load_seconds = time.perf_counter() - start_load
    timer = StageTimer(persam.engine.device)
    persam.timer = timer
    images = 0
    start = time.perf_counter()
    learn_seconds = segment_seconds = find_seconds = 0.0
    find_counts = {"candidates": 0, "refined": 0}
    total = sum(len(dataset.samples(name)) for name in objects)
    with progress_bar(args, total=total, desc="bench", unit="img") as progress:
        for name in objects:
            image, mask = dataset.reference(name).read_pair()
            tick = time.perf_counter()
            concept = persam.learn(image, mask, name=name)
            learn_seconds += time.perf_counter() - tick
            for sample in dataset.samples(name):
                image = sample.read_image()
                tick = time.perf_counter()
                persam.segment(image, concept)
                segment_seconds += time.perf_counter() - tick
                if args.find_candidates > 0:  # same image, embedding from the cache: no encoder
                    _, embedding = persam.embed(image)
                    stats: dict = {}
                    tick = time.perf_counter()
                    detect(persam.engine, embedding, concept, float("-inf"), max_candidates=args.find_candidates,
                           stats=stats)
                    find_seconds += time.perf_counter() - tick
                    for key in find_counts:
                        find_counts[key] += stats.get(key, 0)
                images += 1
                progress.update(1)
            persam.cache.clear()
    wall = time.perf_counter() - start
    report = {
        "method": persam.method,
        "model": persam.model_type,
        "device": str(persam.engine.device),
        "threads": torch.get_num_threads(),
        "objects": len(objects),
        "images": images,
        "encoder_passes": timer.counts.get("encode", 0),
        "stages_s": {stage: round(timer.seconds.get(stage, 0.0), 4) for stage in STAGES},
        "stage_calls": {stage: timer.counts.get(stage, 0) for stage in STAGES},
        "learn_s": round(learn_seconds, 4),
        "segment_s": round(segment_seconds, 4),
        "segment_after_encoder_s": round(timer.seconds.get("prior", 0.0) + timer.seconds.get("decode", 0.0), 4),
        "wall_s": round(wall, 4),
        "model_load_s": round(load_seconds, 4),
        "images_per_s": round(images / wall, 4) if wall else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if args.find_candidates > 0:
        after_encoder = report["segment_after_encoder_s"]
        report["find"] = {"max_candidates": args.find_candidates, "find_s": round(find_seconds, 4),
                          "candidates_mean": round(find_counts["candidates"] / max(images, 1), 2),
                          "refined_mean": round(find_counts["refined"] / max(images, 1), 2),
                          "find_over_segment": round(find_seconds / after_encoder, 3) if after_encoder else None}
    if persam.engine.device.type == "cuda":
        report["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0


def format_report(report: dict) -> str:
    lines = [f"persam bench: {report['method']} on {report['model']} ({report['device']}, "
             f"{plural(report['threads'], 'thread')}), {plural(report['objects'], 'object')}, "
             f"{plural(report['images'], 'image')}",
             f"{'stage':<24}{'total s':>10}{'calls':>8}{'ms/call':>10}"]
    for stage in STAGES:
        calls = report["stage_calls"][stage]
        seconds = report["stages_s"][stage]
        per_call = f"{1000 * seconds / calls:10.1f}" if calls else f"{'-':>10}"
        lines.append(f"{STAGE_LABELS[stage]:<24}{seconds:10.3f}{calls:8d}{per_call}")
    if "find" in report:
        find = report["find"]
        per_image = f"{1000 * find['find_s'] / report['images']:10.1f}" if report["images"] else f"{'-':>10}"
        lines.append(f"{'find (' + str(find['max_candidates']) + ' candidates)':<24}{find['find_s']:10.3f}"
                     f"{report['images']:8d}{per_image}")
    lines += [f"{'learn (all objects)':<24}{report['learn_s']:10.3f}",
              f"{'segment (all images)':<24}{report['segment_s']:10.3f}",
              f"{'wall':<24}{report['wall_s']:10.3f}",
              f"images/s {report['images_per_s']}   encoder passes {report['encoder_passes']}   "
              f"peak RSS {report['peak_rss_mib']} MiB"
              + (f"   peak CUDA {report['peak_cuda_mib']} MiB" if "peak_cuda_mib" in report else "")]
    if "find" in report:
        find = report["find"]
        lines.append(f"find / segment after the encoder: {find['find_over_segment']}x "
                     f"(segment {report['segment_after_encoder_s']:.3f} s, find {find['find_s']:.3f} s; "
                     f"{find['candidates_mean']} candidates per image, {find['refined_mean']} refined)")
    return "\n".join(lines)
