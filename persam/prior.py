"""PerSAM's location prior (docs/method.md 3.1-3.4): from a reference mask and encoder features to
a target embedding, a similarity map over a new image, prompt points and attention guidance.

Shapes: features (1, 256, 64, 64); full-size maps (H, W) at the original image size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam_core import (PIXEL_MEAN, PIXEL_STD, ImageEmbedding, normalize_and_pad, postprocess_masks,
                      resize_uint8)

# The reference code draws the object at this value in channel 0 of an image-shaped mask.
MASK_FILL_IMAGE = 128
MASK_FILL_VIDEO = 215  # video code: cells more than ~58% covered count


class EmptyTargetError(ValueError):
    """The reference mask covers no cell of the 64x64 feature grid."""


def mask_to_feature_grid(mask: np.ndarray, fill: int = MASK_FILL_IMAGE) -> torch.Tensor:
    """(H, W) bool mask -> (64, 64) bool: the feature cells that belong to the target.

    The mask is treated as channel 0 of an image (object pixels at ``fill``), resized,
    normalized and padded like an image, then bilinearly reduced to 64x64; a cell is target
    where the value is > 0.
    """
    channel = np.where(mask, np.uint8(fill), np.uint8(0))
    resized = torch.as_tensor(resize_uint8(channel))[None, None]
    normalized = normalize_and_pad(resized, mean=PIXEL_MEAN[:1], std=PIXEL_STD[:1])
    grid = F.interpolate(normalized, size=(64, 64), mode="bilinear")
    return grid[0, 0] > 0


def reference_grid(mask: np.ndarray, label: str = "reference mask", fill: int = MASK_FILL_IMAGE) -> torch.Tensor:
    """:func:`mask_to_feature_grid`, with a clear error when no cell is target."""
    grid = mask_to_feature_grid(mask, fill)
    if not bool(grid.any()):
        pixels = int(np.count_nonzero(mask))
        if pixels == 0:
            raise EmptyTargetError(f"{label}: mask is empty")
        cell = max(mask.shape[:2]) / 64  # a feature cell, in pixels of this image
        raise EmptyTargetError(
            f"{label}: mask too small, thin or scattered for the 64x64 feature grid ({pixels} object "
            f"pixel{'s' if pixels != 1 else ''}, none where SAM samples its cells: one cell per "
            f"~{cell:.0f}x{cell:.0f} pixels here)")
    return grid


def target_cells(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(N, 256) features of the target cells, in row-major order."""
    return features[0].permute(1, 2, 0)[grid.to(features.device)]


def mean_embedding(cells: torch.Tensor) -> torch.Tensor:
    """PerSAM's raw target embedding T: the mean of the target cells, (256,)."""
    return cells.mean(0)


def max_mean_embedding(cells: torch.Tensor) -> torch.Tensor:
    """PerSAM-F / video target feature before normalization: (max + mean) / 2, (256,)."""
    return torch.max(cells, dim=0)[0] / 2 + cells.mean(0) / 2


def normalized(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm(dim=-1, keepdim=True)


def similarity_grid(embedding: ImageEmbedding, target_feature: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the (normalized) target feature to every normalized cell:
    (64, 64) for a (256,) target, (K, 64, 64) for (K, 256) targets."""
    features = embedding.features[0]
    channels, height, width = features.shape
    cells = (features / features.norm(dim=0, keepdim=True)).reshape(channels, height * width)
    targets = target_feature.reshape(-1, channels).to(cells)
    grid = (targets @ cells).reshape(-1, height, width)
    return grid[0] if target_feature.ndim == 1 else grid


def upsample_similarity(grid: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
    """(64, 64) or (K, 64, 64) similarity -> bilinear x4 -> SAM's postprocess to (H, W) / (K, H, W)."""
    sim = F.interpolate(grid.reshape(1, -1, *grid.shape[-2:]), scale_factor=4, mode="bilinear")
    sim = postprocess_masks(sim, embedding.input_size, embedding.original_size)[0]
    return sim[0] if grid.ndim == 2 else sim


def similarity_map(embedding: ImageEmbedding, target_feature: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the (normalized) target feature to every cell, at full size (H, W).

    64x64 -> bilinear x4 -> SAM's postprocess to the original size. ``target_feature`` may
    be (256,) or (K, 256) for several targets at once, giving (H, W) or (K, H, W).
    """
    return upsample_similarity(similarity_grid(embedding, target_feature), embedding)


def top_k_points(sim: torch.Tensor, k: int) -> np.ndarray:
    """(k, 2) (x, y) of the k highest values of an (H, W) map, best first.

    Ties go to the first pixel in row-major order (the paper uses ``torch.topk``, whose order
    among equal values is unspecified).
    """
    width = sim.shape[-1]
    flat = sim.reshape(-1)
    if k > 1:
        flat = flat.clone()  # taken points are masked out below
    points = []
    for _ in range(min(k, flat.numel())):
        index = int(torch.argmax(flat))  # argmax returns the first maximal index
        points.append((index % width, index // width))
        if k > 1:
            flat[index] = float("-inf")
    return np.array(points, dtype=np.int64).reshape(-1, 2)


def best_and_worst_points(sim: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """(x, y) of the highest and the lowest similarity; ties go to the first in row-major order."""
    (best,), (worst,) = top_k_points(sim, 1), top_k_points(-sim, 1)
    return (int(best[0]), int(best[1])), (int(worst[0]), int(worst[1]))


def attention_guidance(sim: torch.Tensor) -> torch.Tensor:
    """Target-guided attention term A (docs/method.md 3.4): (1, 1, 1, 4096).

    Standardize the full-size map (unbiased std), resize to 64x64, then sigmoid.
    """
    standardized = (sim - sim.mean()) / torch.std(sim)
    small = F.interpolate(standardized[None, None], size=(64, 64), mode="bilinear")
    return small.sigmoid().reshape(1, 1, 1, -1)
