"""persam search: find your objects in a whole photo collection (resumable)."""
from __future__ import annotations

import argparse
import sys

from .common import add_model_args, positive_int
from .support import check_output_dir, non_negative_float, show_progress, threshold_value

HELP = "search a photo collection for one or more concepts (resumable; optional embedding index and Ray)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help=HELP,
        description=HELP + ". Writes OUT/results.jsonl (one row per image, appended per batch), "
        "OUT/errors.jsonl (unreadable files), OUT/summary.csv and OUT/index.html (contact sheet of "
        "the hits). Rerun the same command to resume an interrupted search. Exit status: 0 when "
        "every file was searched, 1 when some could not be used (they are listed in OUT/errors.jsonl; "
        "everything else is written), 130 when interrupted.")
    add_model_args(parser, method=False)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="images, or folders searched recursively (jpg, jpeg, png, bmp, tif, tiff, webp)")
    parser.add_argument("--concept", action="append", required=True, metavar="FILE",
                        help="a concept saved by 'persam learn'; repeat for several (named after the file)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (also the resume state)")
    parser.add_argument("--threshold", type=threshold_value, default=None, metavar="T",
                        help="instance score needed for a hit (default: the concept's calibrated "
                             "threshold, else the library default)")
    parser.add_argument("--max-instances", type=positive_int, default=10, metavar="N",
                        help="at most N instances per concept and image (default: 10)")
    parser.add_argument("--masks", action="store_true",
                        help="write OUT/masks/<concept>/<image>.png for hits (instance ids as palette PNG)")
    parser.add_argument("--overlay", action="store_true",
                        help="write OUT/overlays/<concept>/<image>.jpg for hits")
    parser.add_argument("--batch", type=positive_int, default=4, metavar="N",
                        help="images per encoder batch and per results flush (default: 4)")
    parser.add_argument("--index", metavar="DIR", default=None,
                        help="keep encoder outputs here (fp16, ~2 MiB per image) so a later search of "
                             "the same images skips the encoder")
    ray = parser.add_argument_group("Ray (optional extra: pip install \"persam[ray]\")")
    ray.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                     help="run on Ray: a new local Ray without ADDRESS, else the cluster at ADDRESS "
                          "(e.g. auto, or HOST:6379 after 'ray start --head')")
    ray.add_argument("--ray-actors", type=positive_int, default=None, metavar="N",
                     help="actors (model copies) in the pool (default: 1; needs --ray)")
    ray.add_argument("--ray-cpus", type=non_negative_float, default=None, metavar="C",
                     help="CPUs per actor (default: 1; needs --ray)")
    ray.add_argument("--ray-gpus", type=non_negative_float, default=None, metavar="G",
                     help="GPUs per actor (default: 0; needs --ray; use with --device cuda)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.search import SearchInterrupted, search

    check_output_dir(args.out)  # the search creates it (and resumes from what it holds)
    if args.index is not None:
        check_output_dir(args.index, "--index")
    # Only the Ray options given are passed on: their defaults are search()'s own.
    given = {flag: value for flag, value in (("--ray-actors", args.ray_actors), ("--ray-cpus", args.ray_cpus),
                                             ("--ray-gpus", args.ray_gpus)) if value is not None}
    if given and args.ray is None:
        raise ValueError(f"{', '.join(given)} only apply to a Ray run: add --ray (or drop them)")
    ray_options = {flag[2:].replace("-", "_"): value for flag, value in given.items()}
    try:
        summary = search(args.inputs, args.concept, args.out, checkpoint=args.checkpoint,
                         model_type=args.model, device=args.device, threshold=args.threshold,
                         max_instances=args.max_instances, masks=args.masks, overlays=args.overlay,
                         batch_size=args.batch, index=args.index, ray=args.ray, **ray_options,
                         progress=show_progress(args))
    except SearchInterrupted as stop:
        print(f"persam search: interrupted; {stop.summary.images} images are done and saved in "
              f"{stop.summary.out}. Run the same command again to resume.", file=sys.stderr)
        return 130
    print(summary.text())
    # As segment/find/perseg: a file that could not be used makes the run fail, after the rest is written.
    return 1 if summary.errors else 0
