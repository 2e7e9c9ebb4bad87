"""Cascaded post-refinement (SPEC 3.6 steps 2-3), shared by image and video segmentation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sam_core import ImageEmbedding

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
    """Two multimask decodes, each fed the previous (1, 256, 256) low-res logits; the second
    (and the first, when ``first_box`` is given, as PerSAM-F does) also gets the box of the
    previous mask. The best-scoring mask wins at each step, and only it is upsampled.

    Returns None when the first step's mask is empty (there is no box for the second): the
    caller falls back to its last non-empty result.
    """
    box = first_box
    for step in range(2):
        decoded = decode(embedding, points=points, labels=labels, box=box, mask_input=mask_input,
                         multimask=True, high_res=False)
        best = int(torch.argmax(decoded.scores))
        logits = upsample(embedding, decoded.low_res_logits[best])
        if step == 0:
            box = mask_box((logits > 0).cpu().numpy())
            if box is None:
                return None
            mask_input = decoded.low_res_logits[best: best + 1]
    return Refined(decoded.low_res_logits[best], decoded.scores[best], logits, box)
