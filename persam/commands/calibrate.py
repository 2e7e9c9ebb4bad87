"""persam calibrate: choose a concept's presence threshold on your own labeled images."""
from __future__ import annotations

import argparse
import math
import warnings

from .common import add_model_args, make_persam, positive_int
from .support import check_output_file, collect_inputs, plural, progress_bar

HELP = "choose a concept's presence threshold for 'persam find' from positive and negative images"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help=HELP,
        description=HELP + ". Scores the best instance in every image and stores the threshold with "
        "the highest balanced accuracy (ties: the higher), with AUROC and precision/recall there, "
        "in the concept file.")
    add_model_args(parser, method=False)
    parser.add_argument("--concept", required=True, metavar="FILE", help="a concept saved by 'persam learn'")
    parser.add_argument("--positives", required=True, nargs="+", metavar="IMAGE_OR_DIR",
                        help="images that show the object")
    parser.add_argument("--negatives", required=True, nargs="+", metavar="IMAGE_OR_DIR",
                        help="images that do not show it")
    parser.add_argument("--max-instances", type=positive_int, default=10, metavar="N",
                        help="instances considered per image (default: 10)")
    parser.add_argument("--save", required=True, metavar="FILE",
                        help="where to write the calibrated concept (may be --concept itself)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam import Concept

    # Everything is checked before the model is loaded.
    concept = Concept.load(args.concept)
    save = check_output_file(args.save)
    positives = collect_inputs(args.positives, exclude=[args.concept])
    negatives = collect_inputs(args.negatives, exclude=[args.concept])
    both = {image.path.resolve() for image in positives} & {image.path.resolve() for image in negatives}
    if both:
        raise ValueError(f"{sorted(both)[0]} is listed as both a positive and a negative image")
    persam = make_persam(args)  # find follows the concept's method, whatever the class
    persam.check_concept(concept)
    calibrated = persam.calibrate(concept, [image.path for image in positives],
                                  [image.path for image in negatives], max_instances=args.max_instances,
                                  progress=lambda images: progress_bar(args, images, desc="calibrate",
                                                                       unit="img"))
    path = calibrated.save(save)
    c = calibrated.calibration
    print(f"threshold {c.threshold:.4f} from {plural(c.n_pos, 'positive image')} and "
          f"{plural(c.n_neg, 'negative image')}: AUROC {c.auroc:.3f}, precision {c.precision:.3f}, "
          f"recall {c.recall:.3f}; saved to {path}")
    if math.isinf(c.threshold):
        warnings.warn("no threshold separates the images better than calling nothing present")
    return 0
