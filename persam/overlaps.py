"""Overlap resolution, shared by images (several concepts) and video (several objects): a
pixel belongs to the object with the highest positive logit there, or to none."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["compose_label_map", "winning_logits"]


def winning_logits(logits: Sequence[torch.Tensor | None], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, which of the (H, W) logit maps wins (None: an object not found) and by what.

    argmax over a zero background channel followed by the maps in order, so a pixel needs a
    positive logit to leave the background and ties go to the earlier map. Returns (winner
    (H, W) int64: 0 background, i + 1 for ``logits[i]``; best (H, W) float32: the winning
    value, 0 on background), on the CPU.
    """
    height, width = size
    channels = [torch.zeros(height, width)]
    for item in logits:
        channels.append(torch.full((height, width), float("-inf")) if item is None else item.float().cpu())
    stacked = torch.stack(channels)
    return stacked.argmax(0), stacked.amax(0)


def compose_label_map(logits: Sequence[torch.Tensor | None], ids: Sequence[int],
                      size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 label map from per-object full-size logits (H, W) (None: object not found):
    each pixel gets the id of :func:`winning_logits`' winner (0 where none is positive)."""
    if len(logits) != len(ids):
        raise ValueError(f"{len(logits)} logit maps for {len(ids)} object ids")
    winner, _ = winning_logits(logits, size)
    lookup = np.array([0, *ids], dtype=np.uint8)
    return lookup[winner.numpy()]
