#!/usr/bin/env python
"""Is PerSAM-F's Chebyshev gradient interpolant worth its code?  Time three ways of running
the same 1000-step fit on the same cached reference logits, in one run:

(a) ``fit_mask_weights(refs)``: the default, most steps read a verified Chebyshev interpolant
    of the gradient (``persam/fit.py``);
(b) ``fit_mask_weights(refs, exact=True)``: the exact hand-written chunked gradient at every
    step, the written-out AdamW;
(c) the plain alternative: ``torch.optim.AdamW`` + ``CosineAnnealingLR`` stepping on the exact
    chunked gradient ``persam.fit.loss_and_grad`` (no interpolant, no hand-written optimizer).

    python scripts/bench_fit.py [--sizes 512,1024,1536,2048] [--repeats 3] [--threads 1] [--json FILE]

The logits are real decoder outputs: each object of ``examples/perseg-mini`` is learned with a
seeded random vit_t (the same weights as ``scripts/make_random_checkpoint.py --model vit_t``),
its reference decoded from the positive location prior, and the (3, 256, 256) low-res logits
upsampled the way SAM does to a square image of each size (the example photos are ~512 px; the
PerSeg originals are 1000-2048 px). The target is the reference mask resized (nearest) to that
size. Because random weights give logits of arbitrary scale, ``--synthetic`` adds smooth random
logits (of scale 1, 4 and 30 by default) at the same sizes. Timings are wall-clock medians over ``--repeats``
runs with (a), (b), (c) interleaved, on a possibly shared machine: compare within a run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from make_random_checkpoint import random_weights  # noqa: E402

from persam import PerSAM  # noqa: E402
from persam.fit import (DEFAULT_EPS, DEFAULT_LR, DEFAULT_STEPS, _PixelSet, _Workspace,  # noqa: E402
                        fit_mask_weights, full_weights, initial_weights, loss_and_grad)
from persam.prior import best_and_worst_points, similarity_map  # noqa: E402
from persam_files import write_json  # noqa: E402
from sam_core import MODEL_CONFIGS, build_sam_model  # noqa: E402
from sam_core.transforms import postprocess_masks  # noqa: E402

EXAMPLES = REPO / "examples" / "perseg-mini"


def plain_torch_fit(references, steps=DEFAULT_STEPS, lr=DEFAULT_LR, eps=DEFAULT_EPS) -> torch.Tensor:
    """(c): torch's AdamW and cosine schedule, the exact chunked gradient at every step."""
    pixel_sets = [_PixelSet(logits, target) for logits, target in references]
    workspace = _Workspace(min(1 << 17, max(p.count for p in pixel_sets)))
    free = torch.nn.Parameter(initial_weights())
    optimizer = torch.optim.AdamW([free], lr=lr, eps=eps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        grads = [loss_and_grad(pixels, free.detach(), workspace)[1] for pixels in pixel_sets]
        free.grad = sum(grads) / len(grads)
        optimizer.step()
        schedule.step()
    return full_weights(free.detach())[:, 0]


def low_res_reference_logits(persam: PerSAM, name: str):
    """(3, 256, 256) logits of the example reference decoded from its positive prior, and its mask."""
    image = EXAMPLES / "Images" / name / "00.jpg"
    mask = EXAMPLES / "Annotations" / name / "00.png"
    concept = persam.learn(image, mask)
    array, embedding = persam.embed(image)
    positive, _ = best_and_worst_points(similarity_map(embedding, concept.target_feature))
    decoded = persam.engine.decode(embedding, points=[positive], labels=[1], multimask=True,
                                   high_res=False)
    from persam_files import read_mask
    return decoded.low_res_logits.cpu(), embedding.input_size, read_mask(mask)


def at_size(low_res, input_size, mask: np.ndarray, size: int):
    """SAM's upsampling of the low-res logits for a square image of ``size`` px, and the mask."""
    scale = size / max(mask.shape)
    shape = (round(mask.shape[0] * scale), round(mask.shape[1] * scale))
    logits = postprocess_masks(low_res[None], input_size, shape)[0].contiguous()
    target = F.interpolate(torch.from_numpy(mask)[None, None].float(), shape, mode="nearest")[0, 0] > 0.5
    return logits, target


def synthetic(seed: int, size: int, scale: float):
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(1, 3, 64, 64, generator=generator) * scale
    logits = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)[0].contiguous()
    target = torch.zeros(size, size, dtype=torch.bool)
    target[size // 4: 3 * size // 4, size // 5: 3 * size // 5] = True
    return logits, target


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,1024,1536,2048", help="image sides in px")
    parser.add_argument("--objects", default="cat,colorful_sneaker,duck_toy")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--synthetic", action="store_true", help="also smooth random logits")
    parser.add_argument("--scales", default="1,4,30", help="logit scales of --synthetic")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice; on a machine shared "
                             "with other jobs, 1 avoids threads spinning on busy cores)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # import torch.optim before timing
    model = build_sam_model(MODEL_CONFIGS["vit_t"], "vit_t")
    model.load_state_dict(random_weights(model, seed=0))
    persam = PerSAM(model.eval())
    cases = []
    for name in filter(None, args.objects.split(",")):
        low_res, input_size, mask = low_res_reference_logits(persam, name)
        for size in map(int, args.sizes.split(",")):
            cases.append((f"{name} {size}px", lambda l=low_res, i=input_size, m=mask, s=size: at_size(l, i, m, s)))
    if args.synthetic:
        for size in map(int, args.sizes.split(",")):
            for scale in map(float, args.scales.split(",")):
                cases.append((f"synthetic x{scale:g} {size}px",
                              lambda s=size, c=scale: synthetic(int(c), s, c)))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, "
          f"medians of {args.repeats} interleaved repeats (seconds)")
    print(f"{'case':<30}{'(a) interp':>11}{'(b) exact':>11}{'(c) torch':>11}{'c/a':>7}"
          f"{'max|a-b|':>10}{'max|a-c|':>10}{'max|b-c|':>10}{'logit range':>14}")
    rows = []
    for label, make in cases:
        logits, target = make()
        refs = [(logits, target)]
        times = {"a": [], "b": [], "c": []}
        for _ in range(args.repeats):
            t, wa = timed(fit_mask_weights, refs, steps=args.steps)
            times["a"].append(t)
            t, wb = timed(fit_mask_weights, refs, steps=args.steps, exact=True)
            times["b"].append(t)
            t, wc = timed(plain_torch_fit, refs, steps=args.steps)
            times["c"].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"case": label, "pixels": int(target.numel()), **{f"{k}_s": v for k, v in med.items()},
               "all_s": times, "c_over_a": med["c"] / med["a"],
               "max_abs_a_b": float((wa - wb).abs().max()), "max_abs_a_c": float((wa - wc).abs().max()),
               "max_abs_b_c": float((wb - wc).abs().max()), "weights_a": wa.tolist(),
               "logit_min": float(logits.min()), "logit_max": float(logits.max())}
        rows.append(row)
        print(f"{label:<30}{med['a']:>11.3f}{med['b']:>11.3f}{med['c']:>11.3f}{row['c_over_a']:>6.1f}x"
              f"{row['max_abs_a_b']:>10.1e}{row['max_abs_a_c']:>10.1e}{row['max_abs_b_c']:>10.1e}"
              f"{row['logit_min']:>7.0f}..{row['logit_max']:<5.0f}", flush=True)
    if args.json:
        write_json(args.json, {"steps": args.steps, "repeats": args.repeats,
                               "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
