"""persam perseg: run PerSAM over a whole PerSeg-layout folder and score it."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from .common import StageTimer, add_model_args, make_persam

HELP = "segment every object of a PerSeg-layout folder from its reference image, then score"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perseg", help=HELP,
        description=HELP + ". Writes OUT/<object>/NN.png (0/255) and OUT/results.json.")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="PerSeg root with Images/<object>/NN.jpg and Annotations/<object>/NN.png")
    add_model_args(parser)
    parser.add_argument("--ref-idx", default="00",
                        help="index of the reference image of each object (default: 00)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT/<object>/NN_overlay.jpg with the mask and prompts drawn")
    parser.add_argument("--no-eval", action="store_true", help="only write masks, do not score them")
    parser.add_argument("--all-objects", action="store_true",
                        help="score every object (default: skip the eight objects the paper's "
                             "eval_miou.py skips; their masks are still written)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam_files import save_image, save_mask_png, write_json
    from persam.overlay import draw_overlay
    from persam_datasets import PerSegDataset
    from persam_eval import evaluate_perseg

    dataset = PerSegDataset(args.data, ref_idx=args.ref_idx)
    if not dataset.objects:
        raise FileNotFoundError(f"PerSeg folder {args.data} has no objects")
    for name in dataset.objects:  # fail on layout problems before any model work
        dataset.reference(name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer(args.device)
    start = time.perf_counter()
    with timer("load_model"):
        persam = make_persam(args)
    total = sum(len(dataset.samples(name)) for name in dataset.objects)
    with tqdm(total=total, desc=f"perseg ({persam.method})", unit="img") as progress:
        for name in dataset.objects:
            reference = dataset.reference(name)
            image, mask = reference.read_pair()
            with timer("learn"):
                concept = persam.learn(image, mask, name=name)
            for sample in dataset.samples(name):
                image = sample.read_image()
                with timer("segment"):
                    result = persam.segment(image, concept)
                save_mask_png(out / name / f"{sample.index}.png", result.mask)
                if args.overlay:
                    picture = draw_overlay(image, result.mask, result.points, result.labels, result.box)
                    save_image(out / name / f"{sample.index}_overlay.jpg", picture)
                progress.update(1)
            persam.cache.clear()
    elapsed = time.perf_counter() - start
    timing = {"total_s": round(elapsed, 3), **{f"{k}_s": v for k, v in timer.as_dict().items()},
              "images": total, "images_per_s": round(total / timer.seconds.get("segment", elapsed), 4)}
    if args.no_eval:
        print(f"wrote {total} masks to {out} in {elapsed:.1f} s")
        return 0
    scores = evaluate_perseg(out, args.data, ref_idx=args.ref_idx,
                             **({"exclude": ()} if args.all_objects else {}))
    results = {**scores.to_dict(), "method": persam.method, "model": persam.model_type,
               "checkpoint": str(args.checkpoint), "timing": timing}
    write_json(out / "results.json", results)
    print(scores.format_table())
    print(f"\n{total} images in {elapsed:.1f} s; results in {out / 'results.json'}")
    return 0
