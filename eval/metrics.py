"""Per-frame segmentation metrics with the exact definitions of the DAVIS-2017 toolkit.

The official toolkit is ``davis2017-evaluation`` (``davis2017/metrics.py`` and
``davis2017/utils.py``); every definition below reproduces its numbers, special cases
included. Masks are 2-D arrays; any nonzero value is foreground.
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np

__all__ = [
    "DEFAULT_BOUND_TH",
    "iou",
    "seg_to_boundary",
    "disk",
    "boundary_tolerance_px",
    "boundary_f",
    "db_statistics",
]

DEFAULT_BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal


def _as_bool_2d(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {mask.shape}")
    return mask.astype(bool)


def _same_shape(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void mask shape {void.shape} differs from ground-truth shape {gt.shape}")


def iou(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J (Jaccard index), the toolkit's ``db_eval_iou``.

    J = |pred & gt & ~void| / |(pred | gt) & ~void|, and J = 1 when that union is empty
    (both masks empty: a correct "object absent" prediction).
    """
    pred, gt = _as_bool_2d(pred, "pred"), _as_bool_2d(gt, "gt")
    void = None if void is None else _as_bool_2d(void, "void")
    _same_shape(pred, gt, void)
    intersection = pred & gt
    union = pred | gt
    if void is not None:
        intersection &= ~void
        union &= ~void
    union_area = int(np.count_nonzero(union))
    if union_area == 0:
        return 1.0
    return int(np.count_nonzero(intersection)) / union_area


def seg_to_boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (the toolkit's ``_seg2bmap``).

    Pixel (y, x) is on the boundary when its value differs from its right (y, x+1),
    bottom (y+1, x) or bottom-right (y+1, x+1) neighbour, a neighbour outside the image
    counting as background. Exceptions, as in the toolkit: on the last row only the
    right neighbour is compared, on the last column only the bottom one, and the
    bottom-right corner pixel is never a boundary. The boundary therefore sits half a
    pixel towards the origin from the true contour (a lone pixel at (y, x) yields the
    2x2 block with corners (y-1, x-1) and (y, x)).
    """
    seg = _as_bool_2d(mask, "mask")
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    boundary = (seg != right) | (seg != below) | (seg != below_right)
    boundary[-1, :] = seg[-1, :] != right[-1, :]
    boundary[:, -1] = seg[:, -1] != below[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: float) -> np.ndarray:
    """Disk structuring element, as ``skimage.morphology.disk``: uint8 array.

    Offsets run over ``np.arange(-radius, radius + 1)`` on both axes (a (2r+1)x(2r+1)
    square for integer r); an element is 1 where dx^2 + dy^2 <= radius^2.
    """
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx**2 + dy**2 <= radius**2).astype(np.uint8)


def boundary_tolerance_px(shape: tuple[int, ...], bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary tolerance in pixels: ``bound_th`` itself when >= 1, else
    ``ceil(bound_th * sqrt(H^2 + W^2))``. 480x854 DAVIS frames give 8 pixels."""
    if bound_th >= 1:
        return bound_th
    return float(np.ceil(bound_th * np.linalg.norm(shape)))


def boundary_f(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> float:
    """Boundary F-measure (the toolkit's ``f_measure`` / ``db_eval_boundary`` on one frame).

    With B_p, B_g the boundary maps (:func:`seg_to_boundary`) of pred and gt (void pixels
    first cleared from both masks) and r = :func:`boundary_tolerance_px`, each map is
    dilated with ``disk(r)``. precision = |B_p & dilate(B_g)| / |B_p|,
    recall = |B_g & dilate(B_p)| / |B_g|, F = 2PR / (P + R), F = 0 when P + R = 0.
    Empty boundaries: both empty -> P = R = 1 (F = 1); only B_p empty -> P = 1, R = 0;
    only B_g empty -> P = 0, R = 1 (both give F = 0).
    """
    pred, gt = _as_bool_2d(pred, "pred"), _as_bool_2d(gt, "gt")
    void = None if void is None else _as_bool_2d(void, "void")
    _same_shape(pred, gt, void)
    if void is not None:
        pred = pred & ~void
        gt = gt & ~void
    pred_boundary = seg_to_boundary(pred)
    gt_boundary = seg_to_boundary(gt)
    n_pred = int(np.count_nonzero(pred_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))

    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        kernel = disk(boundary_tolerance_px(pred.shape, bound_th))
        pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
        gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
        precision = np.count_nonzero(pred_boundary & gt_dilated) / float(n_pred)
        recall = np.count_nonzero(gt_boundary & pred_dilated) / float(n_gt)

    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame scores (the toolkit's ``db_statistics``).

    * Mean = mean of the values, NaN ignored.
    * Recall = fraction of values > 0.5 (a NaN counts as a miss).
    * Decay = mean of the first bin minus mean of the last bin (NaN ignored), where with
      n values, e = round(linspace(1, n, 5) + 1e-10) - 1 (half rounds up), bin k holds
      values[e[k] .. e[k+1]] inclusive. Neighbouring bins share their edge value, so for
      n = 8 the first bin is values[0..2] and the last values[5..7]; this is NOT
      ``np.array_split(values, 4)``.

    An empty input gives (nan, nan, nan).
    """
    values = np.asarray(per_frame_values, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        return math.nan, math.nan, math.nan
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    first_bin = values[edges[0] : edges[1] + 1]
    last_bin = values[edges[3] : edges[4] + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices give NaN
        mean = float(np.nanmean(values))
        recall = float(np.mean(values > 0.5))
        decay = float(np.nanmean(first_bin) - np.nanmean(last_bin))
    return mean, recall, decay
