"""``persam davis``: run video PerSAM / PerSAM-F on a DAVIS-2017 split, then evaluate it.

Results land in the official layout, ``OUT/<sequence>/<frame>.png`` (palette PNGs of object
ids, named after the JPEG frames), and the toolkit's CSV tables in ``OUT``.

Resumable: a sequence is written into a hidden temp folder ``OUT/.<sequence>.partial`` (each
PNG via temp file + rename), then a ``.done`` marker (method, model, frame count) is written
last and the folder is renamed to ``OUT/<sequence>``. A later run skips sequences whose
marker matches and whose frames are all there; anything else (an interrupted sequence, a
folder without marker, results of another method, checkpoint or ``--fit-steps``) is redone
from scratch, so a resumed run never mixes settings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from .common import add_model_args, check_fit_steps, load_sam
from .support import check_output_dir, plural, show_progress

DONE_MARKER = ".done"


def partial_dir(out: Path, sequence: str) -> Path:
    """Where a sequence is written before it is complete."""
    return out / f".{sequence}.partial"


def run_info(method: str, model_type: str, fingerprint: str, fit_steps: int | None = None) -> dict:
    """What the ``.done`` marker records: results are reused only for the same method, model
    and settings (PerSAM-F's ``fit_steps``; None for PerSAM, which fits nothing)."""
    return {"method": method, "model_type": model_type, "fingerprint": fingerprint,
            "fit_steps": fit_steps if method == "persam-f" else None}


def sequence_complete(folder: Path, frame_names: list[str], info: dict) -> bool:
    """True if ``folder`` holds a finished run of this sequence with the same method and model."""
    marker = folder / DONE_MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or any(recorded.get(key) != value for key, value in info.items()):
        return False
    if recorded.get("frames") != len(frame_names):
        return False
    return all((folder / f"{name}.png").is_file() for name in frame_names)


def track_sequence(tracker, dataset, sequence: str, out: Path, info: dict, palette: list[int],
                   progress: bool = True) -> Path:
    """Track one sequence into its temp folder, then move the finished folder into place."""
    from tqdm import tqdm

    from persam_files import read_image, save_label_png, write_json

    paths = dataset.frame_paths(sequence)
    first_labels = dataset.first_label_map(sequence)  # void (255) already set to 0
    temp = partial_dir(out, sequence)
    shutil.rmtree(temp, ignore_errors=True)  # left by an interrupted run
    temp.mkdir(parents=True)
    final = out / sequence
    try:
        frames = (read_image(path) for path in paths)
        bar = tqdm(tracker.track(frames, first_labels), total=len(paths), desc=sequence, unit="frame",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True, leave=False)
        for path, labels in zip(paths, bar):
            save_label_png(temp / f"{path.stem}.png", labels, palette)
        record = {**info, "frames": len(paths), "objects": tracker.object_ids}
        write_json(temp / DONE_MARKER, record)
        if final.exists():  # stale or foreign results: move aside, swap in, then delete
            stale = out / f".{sequence}.stale"
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            os.replace(temp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "davis", help="segment every sequence of a DAVIS-2017 split and evaluate (J&F)",
        description="Semi-supervised video object segmentation on DAVIS-2017 with PerSAM / PerSAM-F: "
                    "writes OUT/<sequence>/<frame>.png, then the DAVIS toolkit's tables. "
                    "Resumable: finished sequences are skipped when run again.")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="DAVIS-2017 root (JPEGImages/480p, Annotations/480p, ImageSets/2017)")
    parser.add_argument("--set", dest="split", default="val", metavar="SPLIT",
                        help="split listed in ImageSets/2017/SPLIT.txt (default: val)")
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder")
    parser.add_argument("--no-eval", action="store_true",
                        help="only write the results (e.g. for a split without annotations)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam_datasets import DavisDataset
    from persam_eval import evaluate_davis
    from sam_core import SamEngine, model_fingerprint

    from persam_files import voc_palette
    from ..video import Tracker

    check_fit_steps(args)
    dataset = DavisDataset(args.data, split=args.split)
    out = check_output_dir(args.out, inputs=[("--data", args.data)])
    loaded = load_sam(args)
    engine = loaded if isinstance(loaded, SamEngine) else SamEngine(loaded)
    info = run_info(args.method, engine.model_type, model_fingerprint(engine.sam), args.fit_steps)
    tracker = Tracker(engine, method=args.method, fit_steps=args.fit_steps)
    out.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    done = skipped = 0
    for number, sequence in enumerate(dataset.sequences, start=1):
        if sequence_complete(out / sequence, dataset.frame_names(sequence), info):
            skipped += 1
            continue
        track_sequence(tracker, dataset, sequence, out, info, palette, progress=show_progress(args))
        done += 1
        objects = len(tracker.objects)
        print(f"[{number}/{len(dataset)}] {sequence}: {objects} object{'s' * (objects != 1)}", file=sys.stderr)
    print(f"{plural(done, 'sequence')} tracked, {skipped} already complete, results in {out}", file=sys.stderr)
    if args.no_eval:
        return 0
    scores = evaluate_davis(out, args.data, split=args.split, write_csv=True, progress=show_progress(args))
    print(scores.format_table())
    return 0
