#!/usr/bin/env python
"""Benchmark persam against the paper's pipelines run on the official SAM code, in one run.

    python scripts/bench_official.py --random vit_t [--data DIR] [--objects cat,duck_toy]
        [--repeats 5] [--threads 1] [--official-steps 20] [--fit-steps 1000] [--json FILE]
    python scripts/bench_official.py --checkpoint mobile_sam.pt ...

DIR defaults to the repository's ``examples/perseg-mini`` (three PerSeg objects at 512 px).

Both sides load the same checkpoint file on the same machine, in the same run; the paper's flow
runs in a child process of its own (as its users run it, without persam's allocator tuning):

* official: ``parity/official_flow.py``, a re-creation of the paper's ``persam.py`` /
  ``persam_f.py`` (ZrrSkywalker/Personalize-SAM) on the official SAM / MobileSAM modules
  (``parity/``): cv2 reading, written-out predictor, every image re-encoded each time it
  is set (the reference twice), PerSAM-F's decoder re-run on every training step;
* ours: ``persam.PerSAM`` / ``PerSAMF`` (embedding cache, PerSAM-F fitted on logits decoded once),
  driven as ``persam perseg`` drives it (read each file with ``persam_files``, segment, write
  the mask with ``save_mask_png``).

Both flows read the files and write one mask per image (the paper's ``persam.py`` writes a
colour PNG with ``cv2.imwrite``). Two things the paper's script also does are left out of its
side, so the ratio is, if anything, low: it builds and loads SAM again for every object, and it
saves a matplotlib figure of every mask (``vis_mask_NN.jpg``). Both flows load the model once,
before the timings.

Per object of a PerSeg layout (``Images/<object>/NN.jpg``, ``Annotations/<object>/NN.png``):

(a) PerSAM end to end: learn from the reference, then segment every image of the object, the
    reference included (as the paper's loop does). Seconds for each side and the speed ratio,
    and seconds per stage (read, encode, target + prior, decode, write). The two flows run
    ``--repeats`` times, interleaved (official, ours, official, ours, ...; the paper's flow in
    one long-lived child process), and every number is the median over the repeats.
(b) PerSAM-F fitting: the paper's training loop is timed over ``--official-steps K`` steps and
    extrapolated LINEARLY to ``--fit-steps`` (1000) -- running 1000 decoder passes per object is
    impractical on CPU -- against our ``persam.fit.fit_mask_weights`` run for the full
    ``--fit-steps`` and, like for like, for the same K steps (per-step ratio).
(c) Parity on real images: per image mask IoU between the two flows and whether the prompt
    points are identical, for PerSAM and for PerSAM-F (both sides trained K steps, so the
    weights are comparable; their largest difference is reported).

A warm-up encode + decode on each side precedes the timings. Timings on a shared machine are
noisy; compare ratios from the same run, and on a machine busy with other jobs pass
``--threads 1`` (torch's worker threads spin on busy cores). ``--json FILE`` writes every number.
"""
from __future__ import annotations

import argparse
import json
import statistics
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# parity/ holds the official SAM code loaded as a parity reference (not installed).
sys.path.insert(0, str(REPO))

from parity import official_flow  # noqa: E402
from parity import (VIT_CONFIGS, build_official_sam, load_official_checkpoint,  # noqa: E402
                       save_random_checkpoint)

from persam import PerSAM, PerSAMF, build_sam  # noqa: E402
from persam.fit import fit_mask_weights  # noqa: E402
from persam.mask_weights import reference_logits  # noqa: E402
from persam.masks import load_mask  # noqa: E402
from persam.timing import StageTimer  # noqa: E402
from persam_files import read_image, read_mask, save_mask_png, write_bytes, write_json  # noqa: E402
from sam_core import Sam, ViTConfig, infer_config, read_state_dict  # noqa: E402

DEFAULT_DATA = REPO / "examples" / "perseg-mini"
#: Stages of the PerSAM breakdown table; "target" (learning) and "prior" are shown together.
STAGES = ("read", "encode", "target", "prior", "decode", "write")
#: ``--random`` choices: official types plus a reduced ViT (vit_b layout) for quick runs.
RANDOM_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h", "small_vit")
SMALL_VIT = dict(embed_dim=96, depth=4, num_heads=2, global_attn_indexes=(1, 3))


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def make_random_checkpoint(kind: str, folder: Path, seed: int) -> Path:
    """A seeded random checkpoint in the official layout, written by the test harness."""
    path = folder / f"random_{kind}_seed{seed}.pth"
    if kind == "small_vit":
        save_random_checkpoint("vit_b", path, seed=seed, **SMALL_VIT)
    else:
        save_random_checkpoint(kind, path, seed=seed)
    return path


def load_official_model(checkpoint: Path, device: str) -> torch.nn.Module:
    """The official SAM for a checkpoint; encoder hyper-parameters read from its shapes, so
    reduced ViTs work too; strict loading catches any mismatch."""
    found_type, config = infer_config(read_state_dict(checkpoint))
    if found_type == "vit_t":
        official = build_official_sam("vit_t")
    else:
        assert isinstance(config, ViTConfig)
        overrides = dict(embed_dim=config.embed_dim, depth=config.depth,
                         num_heads=config.num_heads,
                         global_attn_indexes=tuple(config.global_attn_indexes),
                         window_size=config.window_size)
        base = found_type if found_type in VIT_CONFIGS else "vit_b"
        official = build_official_sam(base, **overrides)
    # load_official_checkpoint re-calls .eval() (TinyViT caches its attention biases there).
    return load_official_checkpoint(official, checkpoint).to(device)


def load_models(checkpoint: Path, device: str) -> Tuple[torch.nn.Module, Sam, str]:
    """(official model, our model, model type) from one checkpoint file."""
    ours = build_sam("auto", checkpoint, device=device)
    return load_official_model(checkpoint, device), ours, ours.model_type


# ------------------------------------------------------------------------------------------
# Benchmark parts
# ------------------------------------------------------------------------------------------


def object_paths(data: Path, name: str, ref_idx: str) -> Tuple[Path, Path, List[Path]]:
    images = sorted((data / "Images" / name).glob("*.jpg"))
    ref_image = data / "Images" / name / f"{ref_idx}.jpg"
    ref_mask = data / "Annotations" / name / f"{ref_idx}.png"
    if not ref_image.is_file() or not ref_mask.is_file():
        raise FileNotFoundError(f"{name}: reference {ref_image} or {ref_mask} missing")
    return ref_image, ref_mask, images


def warm_up_official(official: torch.nn.Module, image: Path) -> None:
    """One encode + decode: first calls pay one-off allocation / lazy-init costs."""
    predictor = official_flow.OfficialPredictor(official)
    predictor.set_image(official_flow.read_rgb(image))
    predictor.predict(point_coords=np.array([[10, 10]]), point_labels=np.array([1]))


def write_official_masks(results: List[official_flow.FlowResult], images: List[Path],
                         folder: Path) -> None:
    """The paper's ``persam.py`` mask file: a (H, W, 3) uint8 picture, the mask in colour
    (0, 0, 128), written with ``cv2.imwrite``. (Its matplotlib figure per image is not made.)"""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for path, result in zip(images, results):
        mask_colors = np.zeros((*result.mask.shape, 3), dtype=np.uint8)
        mask_colors[result.mask, :] = np.array([[0, 0, 128]])
        cv2.imwrite(str(folder / f"{path.stem}.png"), mask_colors)


def run_official(official: torch.nn.Module, ref_image: Path, ref_mask: Path, images: List[Path],
                 official_steps: int, with_persam_f: bool, out_folder: Path) -> Dict[str, Any]:
    """The paper's flows on one object: seconds, per-stage seconds and results."""
    out: Dict[str, Any] = {}
    stages: Dict[str, float] = {}
    start = time.perf_counter()
    results = official_flow.official_persam(official, ref_image, ref_mask, images, timings=stages)
    write_start = time.perf_counter()
    write_official_masks(results, images, out_folder)
    stages["write"] = time.perf_counter() - write_start
    out["persam"] = (time.perf_counter() - start, stages, results)
    if with_persam_f:
        stages_f: Dict[str, float] = {}
        start = time.perf_counter()
        weights, results_f = official_flow.official_persam_f(
            official, ref_image, ref_mask, images, steps=official_steps, timings=stages_f)
        out["persam_f"] = (time.perf_counter() - start, stages_f, weights, results_f)
    return out


def warm_up(ours: Sam, image: Path) -> None:
    """One encode + decode of ours."""
    persam = PerSAM(ours)
    _, embedding = persam.embed(image)
    persam.engine.decode(embedding, points=[[10, 10]], labels=[1], multimask=True)


def parity(official: List[official_flow.FlowResult], ours: list, images: List[Path]
           ) -> List[Dict[str, Any]]:
    rows = []
    for path, off, our in zip(images, official, ours):
        rows.append({
            "image": path.name,
            "iou": round(official_flow.mask_iou(off.mask, our.mask), 6),
            "points_equal": bool(np.array_equal(off.points, our.points)),
            "official_points": off.points.tolist(),
            "our_points": np.asarray(our.points).tolist(),
            "official_area": int(off.mask.sum()),
            "our_area": int(our.mask.sum()),
        })
    return rows


def run_ours(ours: Sam, ref_image: Path, ref_mask: Path, images: List[Path],
             out_folder: Path) -> Tuple[float, Dict[str, float], list]:
    """PerSAM on one object as ``persam perseg`` runs it: seconds, per-stage seconds, results."""
    persam = PerSAM(ours)  # fresh embedding cache: nothing carried over from other runs
    timer = StageTimer(ours.device)
    persam.timer = timer
    start = time.perf_counter()
    with timer("read"):
        image, mask = read_image(ref_image), read_mask(ref_mask)
    concept = persam.learn(image, mask)
    results = []
    for path in images:
        with timer("read"):
            image = read_image(path)
        results.append(persam.segment(image, concept))
        with timer("write"):
            save_mask_png(out_folder / f"{path.stem}.png", results[-1].mask)
    return time.perf_counter() - start, dict(timer.seconds), results


def median_stages(runs: List[Tuple[float, Dict[str, float]]]) -> Dict[str, float]:
    """Per-stage medians over repeats, plus "other" (total minus the timed stages) and "total"."""
    table = {}
    for stage in STAGES:
        table[stage] = statistics.median(stages.get(stage, 0.0) for _, stages in runs)
    table["other"] = statistics.median(
        total - sum(stages.get(stage, 0.0) for stage in STAGES) for total, stages in runs)
    table["total"] = statistics.median(total for total, _ in runs)
    return table


def bench_persam(official_runs: List[tuple], our_runs: List[tuple], images: List[Path]
                 ) -> Dict[str, Any]:
    """(a) PerSAM end to end on one object: medians over the interleaved repeats, parity."""
    official_seconds = [run[0] for run in official_runs]
    our_seconds = [run[0] for run in our_runs]
    official_median = statistics.median(official_seconds)
    our_median = statistics.median(our_seconds)
    return {
        "official_s": official_median,
        "ours_s": our_median,
        "speedup": official_median / our_median,
        "official_runs_s": official_seconds,
        "our_runs_s": our_seconds,
        "official_stages_s": median_stages([run[:2] for run in official_runs]),
        "our_stages_s": median_stages([run[:2] for run in our_runs]),
        "images": parity(official_runs[0][2], our_runs[0][2], images),
    }


def our_reference_logits(persam: PerSAM, concept_feature: torch.Tensor, ref_image: Path,
                         ref_mask: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    """Our reference logits for fitting, decoded once from the positive prior (as learn does)."""
    array, embedding = persam.embed(ref_image)
    mask = load_mask(ref_mask, array.shape[:2])
    return reference_logits(persam.engine.decode, embedding, concept_feature), torch.from_numpy(mask)


def bench_persam_f(official_run: tuple, ours: Sam, ref_image: Path, ref_mask: Path,
                   images: List[Path], official_steps: int, fit_steps: int) -> Dict[str, Any]:
    """(b) PerSAM-F fitting cost and (c) PerSAM-F parity on one object (official run given)."""
    official_total, official_stages, official_weights, official_results = official_run
    official_fit = official_stages["fit"]
    per_step = official_fit / official_steps
    official_fit_extrapolated = per_step * fit_steps

    # Ours with the same K steps: weights and masks comparable with the official run.
    persam_k = PerSAMF(ours, fit_steps=official_steps)
    timer = StageTimer(ours.device)
    persam_k.timer = timer
    start = time.perf_counter()
    concept = persam_k.learn(ref_image, ref_mask)
    our_results = [persam_k.segment(path, concept) for path in images]
    our_total_k = time.perf_counter() - start
    our_weights_k = concept.mask_weights.numpy()

    # Our fit alone, on the reference logits decoded once, for K and for fit_steps steps.
    cached = [our_reference_logits(persam_k, concept.target_feature, ref_image, ref_mask)]
    start = time.perf_counter()
    fit_mask_weights(cached, steps=official_steps)
    our_fit_k = time.perf_counter() - start
    start = time.perf_counter()
    our_weights_full = fit_mask_weights(cached, steps=fit_steps).numpy()
    our_fit_full = time.perf_counter() - start
    our_fit_in_learn = timer.seconds.get("fit", float("nan"))
    return {
        "official_steps": official_steps,
        "fit_steps": fit_steps,
        "official_fit_s": official_fit,
        "official_fit_decode_s": official_stages.get("fit_decode", 0.0),
        "official_fit_per_step_s": per_step,
        "official_fit_extrapolated_s": official_fit_extrapolated,
        "ours_fit_s": our_fit_full,
        "ours_fit_k_s": our_fit_k,
        "ours_fit_per_step_s": our_fit_k / official_steps,
        "ours_fit_k_in_learn_s": our_fit_in_learn,
        "fit_speedup_extrapolated": official_fit_extrapolated / our_fit_full,
        "fit_speedup_per_step": per_step / (our_fit_k / official_steps),
        "official_total_k_steps_s": official_total,
        "official_total_extrapolated_s": official_total - official_fit + official_fit_extrapolated,
        "ours_total_k_steps_s": our_total_k,
        "official_weights_k": official_weights.tolist(),
        "our_weights_k": our_weights_k.tolist(),
        "weights_max_abs_diff_k": float(np.abs(official_weights - our_weights_k).max()),
        "our_weights_full": our_weights_full.tolist(),
        "official_stages_s": official_stages,
        "our_stages_s": timer.seconds,
        "images": parity(official_results, our_results, images),
    }


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def print_report(report: Dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nmodel {cfg['model_type']} ({cfg['checkpoint']}), device {cfg['device']}, "
          f"torch {cfg['torch']} with {cfg['threads']} threads, data {cfg['data']}")
    print("Timings are wall-clock seconds on a possibly shared machine: compare within a run.")
    print(f"(a) is the median of {cfg['repeats']} interleaved repeats of each flow.\n")
    print("(a) PerSAM end to end per object (learn + segment all images, reference included)")
    print(f"{'object':<18}{'images':>7}{'official s':>12}{'ours s':>9}{'speed-up':>10}"
          f"{'min IoU':>10}{'points equal':>14}")
    for name, obj in report["objects"].items():
        p = obj["persam"]
        ious = [r["iou"] for r in p["images"]]
        equal = sum(r["points_equal"] for r in p["images"])
        print(f"{name:<18}{len(ious):>7}{p['official_s']:>12.2f}{p['ours_s']:>9.2f}"
              f"{p['speedup']:>9.2f}x{min(ious):>10.5f}{equal:>9}/{len(ious)}")
    total = report["persam_total"]
    print(f"{'all objects':<18}{'':>7}{total['official_s']:>12.2f}{total['ours_s']:>9.2f}"
          f"{total['speedup']:>9.2f}x   (median of per-repeat sums)")
    print("\n    seconds per stage, all objects (medians over repeats of per-repeat sums)")
    columns = ("read", "encode", "target", "prior", "decode", "write", "other", "total")
    print(f"    {'flow':<10}" + "".join(f"{c:>9}" for c in columns))
    for flow, key in (("official", "official_stages_s"), ("ours", "our_stages_s")):
        stages = total[key]
        print(f"    {flow:<10}" + "".join(f"{stages[c]:>9.3f}" for c in columns))
    print("    (ours: target is inside other; other = total - timed stages)")
    if not any("persam_f" in obj for obj in report["objects"].values()):
        return
    k, n = cfg["official_steps"], cfg["fit_steps"]
    print(f"\n(b) PerSAM-F fitting per object: official loop timed over K={k} steps and "
          f"extrapolated linearly to {n}; ours run for {n} (and for K)")
    print(f"{'object':<18}{'off K s':>9}{'off/step':>10}{f'off {n} est':>13}{f'ours {n}':>10}"
          f"{'speed-up':>10}{'ours K':>9}{'ours/step':>11}{'per-step x':>12}")
    for name, obj in report["objects"].items():
        f = obj.get("persam_f")
        if f is None:
            continue
        print(f"{name:<18}{f['official_fit_s']:>9.2f}{f['official_fit_per_step_s']:>10.4f}"
              f"{f['official_fit_extrapolated_s']:>13.1f}{f['ours_fit_s']:>10.3f}"
              f"{f['fit_speedup_extrapolated']:>9.0f}x{f['ours_fit_k_s']:>9.4f}"
              f"{f['ours_fit_per_step_s']:>11.6f}{f['fit_speedup_per_step']:>11.0f}x")
    print(f"\n(c) PerSAM-F parity with both sides trained K={k} steps")
    print(f"{'object':<18}{'max |dw|':>10}{'min IoU':>10}{'points equal':>14}"
          f"{'off total s (est.)':>20}{'ours total s':>14}")
    for name, obj in report["objects"].items():
        f = obj.get("persam_f")
        if f is None:
            continue
        ious = [r["iou"] for r in f["images"]]
        equal = sum(r["points_equal"] for r in f["images"])
        print(f"{name:<18}{f['weights_max_abs_diff_k']:>10.2e}{min(ious):>10.5f}"
              f"{equal:>9}/{len(ious)}{f['official_total_extrapolated_s']:>20.1f}"
              f"{f['ours_total_k_steps_s'] - f['ours_fit_k_in_learn_s'] + f['ours_fit_s']:>14.2f}")
    print(f"  (totals for {n} steps: official = measured run - its K-step fit + the "
          f"extrapolated fit; ours = measured run - its K-step fit + the measured {n}-step fit)")


def serve_official(args: argparse.Namespace, names: List[str]) -> None:
    """Child process: load the official model once, then for each request line on stdin
    ({"persam_f": bool, "dump": path}) run the paper's flows on every object, pickle the runs to
    ``dump`` and answer "done" on stdout."""
    official = load_official_model(args.checkpoint, args.device)
    warm_up_official(official, object_paths(args.data, names[0], args.ref_idx)[0])
    for line in sys.stdin:
        request = json.loads(line)
        dump = Path(request["dump"])
        runs = {name: run_official(official, *object_paths(args.data, name, args.ref_idx),
                                   args.official_steps, request["persam_f"],
                                   dump.parent / f"{dump.stem}_masks" / name) for name in names}
        write_bytes(dump, pickle.dumps(runs))
        print("done", flush=True)


def total_over_objects(official: Dict[str, list], ours: Dict[str, list], repeats: int
                       ) -> Dict[str, Any]:
    """All objects together: per repeat, the sum of seconds (and of each stage) over objects;
    then medians over repeats."""
    def sums(runs: Dict[str, list]) -> List[Tuple[float, Dict[str, float]]]:
        out = []
        for repeat in range(repeats):
            total = sum(runs[name][repeat][0] for name in runs)
            stages = {stage: sum(runs[name][repeat][1].get(stage, 0.0) for name in runs)
                      for stage in STAGES}
            out.append((total, stages))
        return out

    official_sums, our_sums = sums(official), sums(ours)
    official_s = statistics.median(total for total, _ in official_sums)
    ours_s = statistics.median(total for total, _ in our_sums)
    return {"official_s": official_s, "ours_s": ours_s, "speedup": official_s / ours_s,
            "official_runs_s": [total for total, _ in official_sums],
            "our_runs_s": [total for total, _ in our_sums],
            "official_stages_s": median_stages(official_sums),
            "our_stages_s": median_stages(our_sums)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark persam vs the paper's PerSAM / PerSAM-F flow on the official "
                    "SAM code (same checkpoint, same run), with mask parity on every image.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python scripts/bench_official.py --random vit_t --json bench.json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="SAM checkpoint in the official layout")
    source.add_argument("--random", choices=RANDOM_TYPES,
                        help="create a seeded random checkpoint of this type in a temp folder "
                             "(small_vit: a reduced vit_b for quick runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"PerSeg-layout folder (default {DEFAULT_DATA})")
    parser.add_argument("--objects", default="",
                        help="comma-separated object names (default: all in DATA/Images)")
    parser.add_argument("--ref-idx", default="00", help="reference image index (default 00)")
    parser.add_argument("--official-steps", type=int, default=20, metavar="K",
                        help="PerSAM-F training steps actually run by the official flow, then "
                             "extrapolated linearly (default 20)")
    parser.add_argument("--fit-steps", type=int, default=1000,
                        help="PerSAM-F steps to compare at (the paper: 1000)")
    parser.add_argument("--skip-persam-f", action="store_true", help="only run part (a)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved repeats of part (a); medians are reported (default 5)")
    parser.add_argument("--json", type=Path, help="write all numbers to this JSON file")
    parser.add_argument("--serve-official", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.official_steps < 1 or args.fit_steps < 1 or args.repeats < 1:
        parser.error("--official-steps, --fit-steps and --repeats must be >= 1")
    if not (args.data / "Images").is_dir():
        parser.error(f"{args.data} has no Images/ folder (PerSeg layout expected)")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.objects.split(",") if n] or sorted(
        p.name for p in (args.data / "Images").iterdir() if p.is_dir())

    if args.serve_official:  # child process: the paper's flows, one run per request
        serve_official(args, names)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp:
        checkpoint = args.checkpoint or make_random_checkpoint(args.random, Path(tmp), args.seed)
        # The paper's code runs in a process of its own, as its users run it: persam tunes the
        # process's allocator (sam_core/runtime.py), which would speed the official code up too.
        # The process stays alive so that its runs interleave with ours (official, ours, ...).
        print("official flows (separate process) ...", file=sys.stderr, flush=True)
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--checkpoint", str(checkpoint),
             "--data", str(args.data), "--objects", ",".join(names), "--ref-idx", args.ref_idx,
             "--official-steps", str(args.official_steps), "--device", args.device,
             "--threads", str(args.threads), "--serve-official"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def official_run(persam_f: bool, dump: Path) -> Dict[str, Any]:
            child.stdin.write(json.dumps({"persam_f": persam_f, "dump": str(dump)}) + "\n")
            child.stdin.flush()
            if child.stdout.readline().strip() != "done":
                raise RuntimeError("the official flow's process failed (see its error above)")
            with open(dump, "rb") as stream:
                return pickle.load(stream)

        _, ours, model_type = load_models(checkpoint, args.device)
        warm_up(ours, object_paths(args.data, names[0], args.ref_idx)[0])
        official_persam = {name: [] for name in names}
        our_persam = {name: [] for name in names}
        official_persam_f = None
        try:
            for repeat in range(args.repeats):
                print(f"repeat {repeat + 1}/{args.repeats}: official, ours ...", file=sys.stderr,
                      flush=True)
                with_f = repeat == 0 and not args.skip_persam_f
                runs = official_run(with_f, Path(tmp) / f"official{repeat}.pkl")
                if with_f:
                    official_persam_f = {name: runs[name]["persam_f"] for name in names}
                for name in names:
                    official_persam[name].append(runs[name]["persam"])
                    ref_image, ref_mask, images = object_paths(args.data, name, args.ref_idx)
                    our_persam[name].append(run_ours(ours, ref_image, ref_mask, images,
                                                     Path(tmp) / f"ours{repeat}" / name))
        finally:
            child.stdin.close()
            child.wait()
        report: Dict[str, Any] = {"config": {
            "checkpoint": str(args.checkpoint) if args.checkpoint else
            f"random {args.random} seed {args.seed}",
            "model_type": model_type, "device": args.device, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "data": str(args.data), "ref_idx": args.ref_idx, "repeats": args.repeats,
            "official_steps": args.official_steps, "fit_steps": args.fit_steps,
            "extrapolation": f"official PerSAM-F fit timed over {args.official_steps} steps, "
                             f"scaled linearly to {args.fit_steps}",
        }, "objects": {}}
        for name in names:
            ref_image, ref_mask, images = object_paths(args.data, name, args.ref_idx)
            entry: Dict[str, Any] = {"persam": bench_persam(official_persam[name],
                                                            our_persam[name], images)}
            if official_persam_f is not None:
                print(f"[{name}] PerSAM-F (official K={args.official_steps}) ...",
                      file=sys.stderr, flush=True)
                entry["persam_f"] = bench_persam_f(official_persam_f[name], ours, ref_image,
                                                   ref_mask, images, args.official_steps,
                                                   args.fit_steps)
            report["objects"][name] = entry
        report["persam_total"] = total_over_objects(official_persam, our_persam, args.repeats)

    print_report(report)
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
