"""persam find: every copy of your object in images, and whether it is there at all."""
from __future__ import annotations

import argparse
import json

from .common import add_model_args, add_output_args, add_reference_args, positive_int, prepare_image_run
from .support import FAILURES_FILE, plural, run_batch, threshold_value

RESULTS_FILE = "results.jsonl"

HELP = "find all instances of your object in images, or decide that it is absent"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "find", help=HELP,
        description=HELP + ". Writes OUT/results.jsonl (one JSON object per image: image, present, "
        "score, instances with score, box [x0, y0, x1, y1] and area) and OUT/<image name>.png, a "
        "palette PNG instance map (0 background, i for instance i, best first). Folders are searched "
        "recursively and mirrored under OUT; an image that fails is listed at the end and in "
        f"OUT/{FAILURES_FILE}, the others are still searched (exit status 1 if any failed).")
    add_model_args(parser, concept=True)
    add_reference_args(parser)
    parser.add_argument("--threshold", type=threshold_value, default=None, metavar="T",
                        help="presence threshold on the instance score (default: the concept's "
                             "calibrated threshold, else persam's default)")
    parser.add_argument("--max-instances", type=positive_int, default=10, metavar="N",
                        help="report at most N instances per image (default: 10)")
    add_output_args(parser, "also write OUT/<name>_overlay.jpg with instance outlines and scores")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.find import resolve_threshold
    from persam.overlay import instance_overlay
    from persam_files import save_image, save_label_png, write_text

    # Everything is checked before the model is loaded and before anything is written.
    persam, concept, images, out = prepare_image_run(args)
    rows: list[str] = []
    present = 0

    def find_one(item) -> None:
        nonlocal present
        image, embedding = persam.embed(item.path)
        detection = persam.find_embedding(embedding, concept, threshold=args.threshold,
                                          max_instances=args.max_instances)
        save_label_png(item.output(out), detection.label_map())
        if args.overlay:
            picture = instance_overlay(image, [i.mask for i in detection.instances],
                                       [i.score for i in detection.instances])
            save_image(item.output(out, "_overlay.jpg"), picture)
        rows.append(json.dumps({"image": str(item.path), **detection.to_dict()}))
        # Rewritten after every image: an interrupted run keeps the rows of the finished ones.
        write_text(out / RESULTS_FILE, "\n".join(rows) + "\n")
        present += int(detection.present)

    batch = run_batch(images, find_one, args, failures_file=out / FAILURES_FILE,
                      desc=f"find ({concept.method})", unit="img")
    if not rows:  # every image failed: no stale results of an earlier run may stay behind
        write_text(out / RESULTS_FILE, "")
    threshold = resolve_threshold(concept, args.threshold)
    summary = (f"{present} of {plural(batch.done, 'image')} contain the object (threshold {threshold:.4g}); "
               f"results in {out / RESULTS_FILE}")
    if batch.failures:
        summary += (f"; {plural(len(batch.failures), 'image')} failed (listed on stderr and in "
                    f"{out / FAILURES_FILE})")
    print(summary)
    return batch.exit_status
