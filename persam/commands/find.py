"""persam find: every copy of your object in images, and whether it is there at all."""
from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from .common import add_model_args, add_output_args, add_reference_args, prepare_image_run

HELP = "find all instances of your object in images, or decide that it is absent"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "find", help=HELP,
        description=HELP + ". Writes OUT/results.jsonl (one JSON object per image: image, present, "
        "score, instances with score, box [x0, y0, x1, y1] and area) and OUT/<image name>.png, a "
        "palette PNG instance map (0 background, i for instance i, best first).")
    add_model_args(parser)
    add_reference_args(parser)
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="presence threshold on the instance score (default: the concept's "
                             "calibrated threshold, else persam's default)")
    parser.add_argument("--max-instances", type=int, default=10, metavar="N",
                        help="report at most N instances per image (default: 10)")
    add_output_args(parser, "also write OUT/<name>_overlay.jpg with instance outlines and scores")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam_files import read_image, save_image, save_label_png, write_text
    from persam.overlay import instance_overlay

    if args.max_instances < 1:
        raise ValueError(f"--max-instances must be at least 1, got {args.max_instances}")
    persam, concept, images, out = prepare_image_run(args)
    rows: list[str] = []
    present = 0
    for path in tqdm(images, desc=f"find ({concept.method})", unit="img"):
        image = read_image(path)
        detection = persam.find(image, concept, threshold=args.threshold, max_instances=args.max_instances)
        save_label_png(out / f"{path.stem}.png", detection.label_map())
        if args.overlay:
            picture = instance_overlay(image, [i.mask for i in detection.instances],
                                       [i.score for i in detection.instances])
            save_image(out / f"{path.stem}_overlay.jpg", picture)
        rows.append(json.dumps({"image": str(path), **detection.to_dict()}))
        # Rewritten after every image: an interrupted run keeps the rows of the finished ones.
        write_text(out / "results.jsonl", "\n".join(rows) + "\n")
        present += int(detection.present)
    threshold = detection.threshold
    print(f"{present} of {len(images)} images contain the object (threshold {threshold:.4g}); "
          f"results in {out / 'results.jsonl'}")
    return 0
