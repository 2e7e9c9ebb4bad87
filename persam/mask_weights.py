"""PerSAM-F's two steps around the fit (docs/method.md 4), shared by images and video: decode the
reference from its own positive prior, fit the three mask-scale weights on those logits
(:func:`persam.fit.fit_mask_weights`), and mix SAM's three masks with the weights."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from sam_core import ImageEmbedding

from .fit import fit_mask_weights
from .prior import similarity_map, top_k_points

__all__ = ["fit_reference_weights", "reference_logits", "weighted_masks"]


def reference_logits(decode: Callable, embedding: ImageEmbedding, target_feature: torch.Tensor) -> torch.Tensor:
    """(3, H, W) full-size multimask logits of a reference, decoded (one ``decode`` call, e.g.
    :meth:`sam_core.SamEngine.decode`) from its highest-similarity point alone."""
    positive = top_k_points(similarity_map(embedding, target_feature), 1)
    return decode(embedding, points=positive, labels=[1], multimask=True).high_res_logits.cpu()


def fit_reference_weights(decode: Callable, references: Sequence[tuple[ImageEmbedding, np.ndarray]],
                          target_feature: torch.Tensor, steps: int,
                          stage: Callable[[str], ContextManager] | None = None) -> torch.Tensor:
    """PerSAM-F's (3,) weights: each reference ((embedding, (H, W) bool mask)) decoded once
    with :func:`reference_logits`, then ``steps`` optimizer steps on those cached logits
    (timed as stages "decode" and "fit" when a ``stage(name)`` timer is given)."""
    stage = stage or (lambda name: nullcontext())
    cached = []
    for embedding, mask in references:
        with stage("decode"):
            logits = reference_logits(decode, embedding, target_feature)
        cached.append((logits, torch.as_tensor(np.asarray(mask, dtype=bool))))
    with stage("fit"):
        return fit_mask_weights(cached, steps=steps)


def weighted_masks(high_res_logits: torch.Tensor, low_res_logits: torch.Tensor,
                   weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's three masks mixed by PerSAM-F's weights, as the reference code does (each map
    scaled, then summed): (3, H, W) and (3, 256, 256) logits -> (H, W) and (256, 256)."""
    weights = weights.to(high_res_logits.device, torch.float32)[:, None, None]
    return (high_res_logits * weights).sum(0), (low_res_logits * weights).sum(0)
