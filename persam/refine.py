"""Cascaded post-refinement (docs/method.md 3.6 steps 2-3), shared by image and video segmentation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from sam_core import Decoded, ImageEmbedding

from .masks import mask_box


@dataclass
class Refined:
    """The last refinement step's best mask: low_res_logits (256, 256), its predicted IoU
    ``score``, full-size ``logits`` (H, W) and the box prompt it was decoded with."""

    low_res_logits: torch.Tensor
    score: torch.Tensor
    logits: torch.Tensor
    box: np.ndarray | None


def cascaded_refinement(decode: Callable, upsample: Callable, embedding: ImageEmbedding,
                        points: np.ndarray, labels: np.ndarray, mask_input: torch.Tensor,
                        first_box: np.ndarray | None = None) -> Refined | None:
    """:func:`cascaded_refinement_batch` for one prompt set, with a one-set ``decode`` (e.g.
    :meth:`sam_core.SamEngine.decode`): points (N, 2), labels (N,), mask_input (1, 256, 256)
    or (256, 256), first_box (4,) or None."""
    def decode_batch(embedding, points, labels, boxes, mask_input, multimask):
        decoded = decode(embedding, points=points[0], labels=labels[0],
                         box=None if boxes is None else boxes[0], mask_input=mask_input[0:1],
                         multimask=multimask, high_res=False)
        return Decoded(None, decoded.scores[None], decoded.low_res_logits[None])

    boxes = None if first_box is None else [first_box]
    return cascaded_refinement_batch(decode_batch, upsample, embedding, np.asarray(points)[None],
                                     np.asarray(labels)[None], mask_input.reshape(1, 256, 256), boxes)[0]


def cascaded_refinement_batch(decode_batch: Callable, upsample: Callable, embedding: ImageEmbedding,
                              points: np.ndarray, labels: np.ndarray, mask_input: torch.Tensor,
                              first_boxes: Sequence[np.ndarray] | None = None) -> list[Refined | None]:
    """Two multimask decodes per prompt set, each fed the set's previous (256, 256) low-res
    logits; the second (and the first, when ``first_boxes`` is given, as PerSAM-F does) also
    gets the box of the previous mask. The best-scoring mask wins at each step, and only it is
    upsampled. All B sets share one decoder call per step (``decode_batch``, e.g.
    :meth:`sam_core.SamEngine.decode_batch`): points (B, N, 2), labels (B, N), mask_input
    (B, 256, 256), first_boxes B boxes (4,) or None.

    A set whose first step's mask is empty (no box for the second) gives None: its caller
    falls back to its last non-empty result.
    """
    count = len(points)
    results: list[Refined | None] = [None] * count
    active = list(range(count))
    boxes = None if first_boxes is None else np.stack([np.asarray(b) for b in first_boxes])
    for step in range(2):
        if not active:
            break
        decoded = decode_batch(embedding, points=points[active], labels=labels[active], boxes=boxes,
                               mask_input=mask_input, multimask=True)
        best = torch.argmax(decoded.scores, dim=1)
        rows = torch.arange(len(active), device=best.device)
        best_low = decoded.low_res_logits[rows, best]
        logits = upsample(embedding, best_low)  # (b, H, W): only the kept masks
        if step == 1:
            for row, index in enumerate(active):
                results[index] = Refined(best_low[row], decoded.scores[row, best[row]], logits[row],
                                         boxes[row])
            break
        found = [mask_box(mask) for mask in (logits > 0).cpu().numpy()]
        kept = [row for row, box in enumerate(found) if box is not None]
        active = [active[row] for row in kept]
        boxes = np.stack([found[row] for row in kept]) if kept else None
        mask_input = best_low[kept]
    return results
