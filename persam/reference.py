"""A reference mask from clicks: positive/negative points and/or a box, decoded by SAM.

Most people have no mask of their object; a click on it is enough. The mask is SAM's answer to
those prompts (multimask output, the one with the highest predicted IoU, as SAM's own demo
does for ambiguous single clicks), made with the same engine PerSAM uses, so the reference
image is encoded once: :meth:`PerSAM.embed` caches the embedding by content and ``learn``
right after reuses it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sam_core.engine import ImageEmbedding, SamEngine


class PromptError(ValueError):
    """Reference prompts (points, labels, box) that cannot be used; the message says why."""


def check_prompts(size: tuple[int, int], points: Sequence | np.ndarray | None = None,
                  labels: Sequence | np.ndarray | None = None,
                  box: Sequence | np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                  np.ndarray | None]:
    """Validate prompts for an image of ``size`` (H, W); return them as arrays.

    points: (N, 2) (x, y) pixels; labels: (N,) 1 object / 0 background (default: all 1);
    box: (x0, y0, x1, y1) pixels, corners in any order (normalized to x0 <= x1, y0 <= y1).
    """
    height, width = size
    point_array = label_array = box_array = None
    if points is not None and len(points) > 0:
        try:
            point_array = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise PromptError("points must be (x, y) pairs of numbers, e.g. [(310, 220)]") from None
        if point_array.ndim == 1 and point_array.size == 2:  # one point given as (x, y)
            point_array = point_array[None]
        if point_array.ndim != 2 or point_array.shape[1] != 2:
            raise PromptError(f"points must be (x, y) pairs, e.g. [(310, 220)]; got shape {point_array.shape}")
        if labels is None:
            label_array = np.ones(len(point_array), dtype=np.int64)
        else:
            label_array = np.asarray(labels).reshape(-1).astype(np.int64)
            if len(label_array) != len(point_array):
                raise PromptError(f"{len(point_array)} points but {len(label_array)} labels")
            if not np.isin(label_array, (0, 1)).all():
                raise PromptError("point labels must be 1 (object) or 0 (background)")
        for x, y in point_array:
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    if box is not None:
        box_array = np.asarray(box, dtype=np.float64).reshape(-1)
        if box_array.size != 4:
            raise PromptError(f"a box needs 4 numbers x0,y0,x1,y1, got {box_array.size}")
        x0, x1 = sorted(box_array[[0, 2]])
        y0, y1 = sorted(box_array[[1, 3]])
        if x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
            raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {width}x{height} image")
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area")
        box_array = np.array([max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)])
    if point_array is None and box_array is None:
        raise PromptError("give at least one point or a box")
    if label_array is not None and box_array is None and not (label_array == 1).any():
        raise PromptError("give at least one object point (background points alone select nothing)")
    return point_array, label_array, box_array


def mask_from_prompts(engine: SamEngine, embedding: ImageEmbedding, points=None, labels=None,
                      box=None) -> np.ndarray:
    """SAM's mask for the prompts on an encoded image: (H, W) bool, possibly empty."""
    points, labels, box = check_prompts(embedding.original_size, points, labels, box)
    decoded = engine.decode(embedding, points=points, labels=labels, box=box, multimask=True)
    best = int(decoded.scores.argmax())
    return (decoded.high_res_logits[best] > 0).cpu().numpy()
