"""``persam eval perseg|davis``: score saved predictions with the public protocols."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from .common import add_model_args, make_persam, positive_int
from .support import check_output_file, progress_bar, show_progress, threshold_value

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` with its ``perseg``, ``davis``, ``presence`` and ``instances`` sub-commands."""
    parser = subparsers.add_parser(
        "eval",
        help="score saved masks on PerSeg (mIoU) or DAVIS-2017 (J&F); score 'find' (presence, instances)",
        description="Score saved predictions with the PerSeg (eval_miou.py) or DAVIS-2017 "
        "(davis2017-evaluation) protocol.",
    )
    targets = parser.add_subparsers(dest="eval_target", metavar="BENCHMARK", required=True)

    perseg = targets.add_parser(
        "perseg",
        help="mIoU / mAcc of masks PRED/<object>/NN.png against a PerSeg folder",
        description="Per-object IoU = sum of intersections / sum of unions over the test images "
        "(reference excluded); mIoU = mean over objects, in percent.",
    )
    perseg.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="predicted masks, DIR/<object>/NN.png (any nonzero pixel = object)")
    perseg.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="PerSeg folder with Images/ and Annotations/")
    perseg.add_argument("--ref-idx", default="00", metavar="NN",
                        help="index of each object's reference image, not scored (default: 00)")
    perseg.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    perseg.add_argument("--all-objects", action="store_true",
                        help="score every object (default: skip the eight objects the paper's "
                             "eval_miou.py skips, so mIoU follows its protocol)")
    perseg.set_defaults(func=run_perseg)

    davis = targets.add_parser(
        "davis",
        help="J&F of label maps RESULTS/<sequence>/<frame>.png on DAVIS-2017",
        description="Semi-supervised DAVIS-2017 evaluation as the official toolkit does it; writes "
        "global_results-<set>.csv and per-sequence_results-<set>.csv into the results folder.",
    )
    davis.add_argument("--results", required=True, type=Path, metavar="DIR",
                       help="results, DIR/<sequence>/<frame>.png palette label maps")
    davis.add_argument("--davis", required=True, type=Path, metavar="DIR",
                       help="DAVIS-2017 folder with JPEGImages/, Annotations/ and ImageSets/")
    davis.add_argument("--set", default="val", dest="split", metavar="SET",
                       help="split listed in ImageSets/2017/SET.txt (default: val)")
    davis.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    davis.set_defaults(func=run_davis)

    for name, summary, description, data_help, func in FIND_PROTOCOLS:
        protocol = targets.add_parser(name, help=summary, description=description)
        add_model_args(protocol)
        protocol.add_argument("--data", required=True, type=Path, metavar="DIR", help=data_help)
        add_find_eval_args(protocol)
        protocol.set_defaults(func=func)


def add_find_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ref-idx", default="00", metavar="NN", help="reference image index (default: 00)")
    parser.add_argument("--threshold", type=threshold_value, default=None, metavar="T",
                        help="presence threshold (default: persam's default threshold)")
    parser.add_argument("--max-instances", type=positive_int, default=10, metavar="N", help="default: 10")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")


def run_presence(args: argparse.Namespace) -> int:
    from persam.find_eval import format_presence, perseg_presence

    return run_find_protocol(args, perseg_presence, format_presence, "presence")


def run_instances(args: argparse.Namespace) -> int:
    from persam.find_eval import format_instances, multi_instance

    return run_find_protocol(args, multi_instance, format_instances, "instances")


def run_find_protocol(args: argparse.Namespace, protocol, formatter, name: str) -> int:
    """Load the folder and the model, run ``protocol``, print ``formatter``'s table, save JSON."""
    from persam_datasets import PerSegDataset
    from persam_files import write_json

    # Everything is checked before the model is loaded.
    if args.json is not None:
        check_output_file(args.json, "--json")
    dataset = PerSegDataset(args.data, ref_idx=args.ref_idx)
    if not dataset.objects:
        raise FileNotFoundError(f"PerSeg-layout folder {args.data} has no objects")
    persam = make_persam(args)
    progress = partial(progress_bar, args, desc=name, unit="img")
    result = protocol(persam, dataset, args.threshold, args.max_instances, progress=progress)
    print(formatter(result))
    if args.json is not None:
        write_json(args.json, {"method": persam.method, **result})
        print(f"Scores saved in {args.json}")
    return 0


def run_perseg(args: argparse.Namespace) -> int:
    from persam_eval import evaluate_perseg, write_json_atomic

    if args.json is not None:
        check_output_file(args.json, "--json")
    scores = evaluate_perseg(args.pred, args.gt, ref_idx=args.ref_idx, progress=show_progress(args),
                             **({"exclude": ()} if args.all_objects else {}))
    print(scores.format_table())
    if args.json is not None:
        write_json_atomic(args.json, scores.to_dict())
        print(f"Scores saved in {args.json}")
    return 0


def run_davis(args: argparse.Namespace) -> int:
    from persam_eval import evaluate_davis, global_csv_name, per_sequence_csv_name, write_json_atomic

    if args.json is not None:
        check_output_file(args.json, "--json")
    scores = evaluate_davis(args.results, args.davis, split=args.split, write_csv=True,
                            progress=show_progress(args))
    print(scores.format_table())
    print()
    print(f"Global results saved in {args.results / global_csv_name(args.split)}")
    print(f"Per-sequence results saved in {args.results / per_sequence_csv_name(args.split)}")
    if args.json is not None:
        write_json_atomic(args.json, scores.to_dict())
        print(f"Scores saved in {args.json}")
    return 0


# name, help, description, --data help, runner: the 'find' protocols (docs/method.md 11)
FIND_PROTOCOLS = (
    ("presence", "AUROC of 'persam find' deciding presence on PerSeg (other objects are the negatives)",
     "For each object: a concept from its reference; positives are its test images, negatives the "
     "test images of every other object; scores are the best instance's. Prints per-object AUROC "
     "and precision/recall/F1 at the threshold, and 'mean AUROC: x'.",
     "PerSeg folder (Images/, Annotations/)", run_presence),
    ("instances", "instance precision/recall (IoU 0.5) and count accuracy of 'persam find'",
     "On a folder made by scripts/make_multi_instance.py (PerSeg layout, instance label maps): a "
     "concept per object from its reference; predicted instances match ground truth at mask "
     "IoU >= 0.5, greedily by score.",
     "multi-instance folder (persam_datasets.make_multi_instance)", run_instances),
)
