"""persam perseg: run PerSAM over a whole PerSeg-layout folder and score it."""
from __future__ import annotations

import argparse
import time

from .common import StageTimer, add_model_args, make_persam
from .support import FAILURES_FILE, check_output_dir, plural, run_batch

HELP = "segment every object of a PerSeg-layout folder from its reference image, then score"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "perseg", help=HELP,
        description=HELP + ". Writes OUT/<object>/NN.png (0/255) and OUT/results.json; scores "
        "(mIoU, mAcc) are in percent over the test images, the references are not scored. An image "
        f"that fails is listed at the end and in OUT/{FAILURES_FILE}, the others are still "
        "segmented, and nothing is scored (exit status 1).")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="PerSeg root with Images/<object>/NN.jpg and Annotations/<object>/NN.png")
    add_model_args(parser)
    parser.add_argument("--ref-idx", default="00",
                        help="index of the reference image of each object (default: 00)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (created when the first mask is written)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write OUT/<object>/NN_overlay.jpg with the mask and prompts drawn")
    parser.add_argument("--no-eval", action="store_true",
                        help="only write masks, do not score them (test images need no annotation then)")
    parser.add_argument("--all-objects", action="store_true",
                        help="score every object (default: skip the eight objects the paper's "
                             "eval_miou.py skips; their masks are still written)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from persam.overlay import draw_overlay
    from persam_datasets import PerSegDataset
    from persam_eval import evaluate_perseg
    from persam_files import save_image, save_mask_png, write_json

    dataset = PerSegDataset(args.data, ref_idx=args.ref_idx, test_annotations=not args.no_eval)
    if not dataset.objects:
        raise FileNotFoundError(f"PerSeg folder {args.data} has no objects")
    for name in dataset.objects:  # fail on layout problems before any model work
        dataset.reference(name)
    out = check_output_dir(args.out, inputs=[("--data", args.data)])
    timer = StageTimer(args.device)
    start = time.perf_counter()
    with timer("load_model"):
        persam = make_persam(args)

    samples = [sample for name in dataset.objects for sample in dataset.samples(name)]
    concepts: dict[str, object] = {}

    def concept_of(name: str):
        """Learned on the object's first image; a reference that fails fails its images too."""
        if name not in concepts:
            reference = dataset.reference(name)
            try:
                image, mask = reference.read_pair()
                with timer("learn"):
                    concepts[name] = persam.learn(image, mask, name=name)
            except Exception as exc:
                concepts[name] = ValueError(f"reference {reference.key} failed: {exc}")
            persam.cache.clear()  # embeddings of one object are not reused by the next
        concept = concepts[name]
        if isinstance(concept, Exception):
            raise concept
        return concept

    def segment_one(sample) -> None:
        concept = concept_of(sample.object_name)
        image = sample.read_image()
        with timer("segment"):
            result = persam.segment(image, concept)
        save_mask_png(out / sample.object_name / f"{sample.index}.png", result.mask)
        if args.overlay:
            picture = draw_overlay(image, result.mask, result.points, result.labels, result.box)
            save_image(out / sample.object_name / f"{sample.index}_overlay.jpg", picture)

    batch = run_batch(samples, segment_one, args, describe=lambda sample: sample.key,
                      failures_file=out / FAILURES_FILE, desc=f"perseg ({persam.method})", unit="img")
    elapsed = time.perf_counter() - start
    total = len(samples)
    references = len(dataset.objects)
    timing = {"total_s": round(elapsed, 3), **{f"{k}_s": v for k, v in timer.as_dict().items()},
              "images": total, "images_per_s": round(total / timer.seconds.get("segment", elapsed), 4)}
    written = (f"wrote {plural(batch.done, 'mask')} of {plural(references, 'object')} to {out} "
               f"in {elapsed:.1f} s")
    if batch.failures:
        print(f"{written}; {plural(len(batch.failures), 'image')} failed (listed on stderr and in "
              f"{out / FAILURES_FILE})" + ("" if args.no_eval else ", so nothing was scored"))
        return batch.exit_status
    if args.no_eval:
        print(written)
        return 0
    scores = evaluate_perseg(out, args.data, ref_idx=args.ref_idx,
                             **({"exclude": ()} if args.all_objects else {}))
    results = {**scores.to_dict(), "method": persam.method, "model": persam.model_type,
               "checkpoint": str(args.checkpoint), "timing": timing}
    write_json(out / "results.json", results)
    scored = sum(score.num_images for score in scores.per_object.values())
    print(scores.format_table())
    not_scored = (f"the reference, index {args.ref_idx}, is" if references == 1
                  else f"the {references} references, index {args.ref_idx}, are")
    skipped = f", nor the images of {plural(len(scores.excluded), 'skipped object')}" if scores.excluded else ""
    print(f"\n{written}; scored {plural(scored, 'test image')} ({not_scored} not scored{skipped}); "
          f"results in {out / 'results.json'}")
    return 0
