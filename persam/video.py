"""Personalized multi-object video segmentation (docs/method.md 6, DAVIS-2017 semi-supervised).

The first frame and its label map (one id per object, 0 background) are the only supervision.
Each object gets a target feature from frame 0; every later frame is encoded ONCE and each
object is then found with prompts built from its similarity map and its box in the previous
frame::

    tracker = Tracker(build_sam("vit_t", "mobile_sam.pt"), method="persam")
    for labels in tracker.track(frame_paths, first_label_map):   # first item: the given map
        ...                                                        # (H, W) uint8 object ids

Per object and frame (method "persam"):

1. positives: the ``top_k`` (2) highest points of the full-size similarity map, plus the centre
   of the object's previous box expanded by ``box_margin`` (10) px and clipped to the image;
   the expanded box is the box prompt. No negative point (as in the paper's video code).
2. decode, multimask on; keep the LARGEST of the three masks (pixel count at full size).
3. refine as docs/method.md 3.6 steps 2-3: same points + that mask's low-res logits, multimask, best
   score; then the same again plus the box of that mask. Result: full-size logits.

Method "persam-f" fits PerSAM-F's two mask weights per object on frame 0 (decode frame 0 from
the object's own positive prior, multimask, then :func:`persam.fit.fit_mask_weights`). On later
frames step 2 uses the weighted sum of the three masks instead of the largest, and the first
refinement already carries the box of that weighted mask (docs/method.md 4).

The label map is the argmax over ``[0, logits_1, ..., logits_K]`` (background channel first, so
a pixel no object claims with a positive logit stays 0; ties go to the lower id). The box each
object uses on the next frame is the box of its pixels in that label map; an object absent
from a label map keeps its last known box, and ids are never renumbered (ids may be
non-contiguous, e.g. {1, 3}).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import ContextManager, Iterable, Iterator

import numpy as np
import torch

from persam_files import read_label_map
from sam_core import IMAGE_SIZE, ImageEmbedding, ImageLike, Sam, SamEngine, load_image, resized_shape

from .concept import METHODS
from .fit import DEFAULT_STEPS
from .mask_weights import fit_reference_weights, weighted_masks
from .masks import mask_box
from .overlaps import compose_label_map
from .prior import (MASK_FILL_VIDEO, mask_to_feature_grid, max_mean_embedding, normalized,
                    similarity_map, target_cells, top_k_points)
from .refine import cascaded_refinement
from .timing import StageTimer

__all__ = ["Tracker", "DEFAULT_TOP_K", "DEFAULT_BOX_MARGIN", "FRAME_STAGES", "object_ids",
           "expand_box", "top_k_points", "largest_mask_index", "compose_label_map",
           "video_target_grid"]

FRAME_STAGES = ("encode", "prior", "decode", "compose")  # reported for every frame, even at 0 s
DEFAULT_TOP_K = 2  # positives from the similarity map (paper's persam_video.py)
DEFAULT_BOX_MARGIN = 10  # px added on each side of the previous box (paper's --threshold)
_FEATURE_STRIDE = IMAGE_SIZE // 64  # pixels of the 1024 frame per feature cell


# -- pure helpers ------------------------------------------------------------------------
def object_ids(label_map: np.ndarray) -> list[int]:
    """Sorted nonzero ids of an (H, W) label map."""
    ids = np.unique(label_map)
    return [int(i) for i in ids if i != 0]


def expand_box(box: np.ndarray, margin: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grow a tight (x0, y0, x1, y1) pixel box by ``margin`` on each side, clipped to the image.

    ``size`` is (H, W). As in the paper's code the far edges clip to W and H (the image
    border, not the last pixel) and the centre is the integer midpoint. Returns
    (box (4,) int64, centre (2,) int64 as (x, y)).
    """
    height, width = size
    x0, y0, x1, y1 = (int(v) for v in box)
    x0 = max(x0 - margin, 0)
    y0 = max(y0 - margin, 0)
    x1 = min(x1 + margin, width)
    y1 = min(y1 + margin, height)
    return np.array([x0, y0, x1, y1], np.int64), np.array([(x0 + x1) // 2, (y0 + y1) // 2], np.int64)


def largest_mask_index(logits: torch.Tensor) -> int:
    """Index of the mask with the most pixels (logit > 0) among (K, H, W) logits; ties -> first.

    The paper's code counts pixels in uint8 (so counts wrap modulo 256); we count exactly.
    """
    counts = (logits > 0).reshape(logits.shape[0], -1).sum(1)
    return int(torch.argmax(counts))


def video_target_grid(mask: np.ndarray) -> tuple[torch.Tensor, bool]:
    """(64, 64) bool target cells of an (H, W) object mask for video (fill 215, docs/method.md 6).

    The 1024 -> 64 bilinear step samples each cell near its centre, so an object that covers
    no cell centre gives no cells (the paper's code then averages an empty set and tracks
    NaNs); here it falls back to every cell containing at least one of its pixels.
    Returns (grid, used_fallback).
    """
    grid = mask_to_feature_grid(mask, MASK_FILL_VIDEO)
    if bool(grid.any()):
        return grid, False
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("object mask is empty")
    height, width = mask.shape
    new_h, new_w = resized_shape((height, width))
    # Pixel centres mapped into the resized 1024 frame, then to their 16 px cell.
    cell_rows = np.minimum(((rows + 0.5) * new_h / height) // _FEATURE_STRIDE, 63).astype(np.int64)
    cell_cols = np.minimum(((cols + 0.5) * new_w / width) // _FEATURE_STRIDE, 63).astype(np.int64)
    grid = torch.zeros(64, 64, dtype=torch.bool)
    grid[torch.from_numpy(cell_rows), torch.from_numpy(cell_cols)] = True
    return grid, True


# -- the tracker -------------------------------------------------------------------------
@dataclass
class TrackedObject:
    """State of one object: its id, normalized target feature (256,), its last known tight box
    (x0, y0, x1, y1) in pixels, and for PerSAM-F its mask weights (3,)."""

    object_id: int
    target_feature: torch.Tensor
    box: np.ndarray
    mask_weights: torch.Tensor | None = None
    visible: bool = True


class Tracker:
    """Track the objects of a first-frame label map through a video, one encoder pass a frame.

    ``sam``: a :class:`sam_core.Sam`, a :class:`sam_core.SamEngine`, or a ``PerSAM`` /
    ``PerSAMF`` (its engine is used). ``method``: "persam" or "persam-f". ``top_k``: positive
    points from the similarity map; ``box_margin``: px added around the previous box;
    ``fit_steps``: PerSAM-F optimizer steps (default 1000, or the PerSAM instance's).

    Use :meth:`track`, or :meth:`start` then :meth:`step` per frame. After each step,
    ``frame_seconds`` holds that frame's wall-clock seconds per stage ("encode", "prior",
    "decode", "compose") and ``decoder_calls`` its number of mask-decoder calls;
    ``stage_seconds`` accumulates over the tracker's life.
    """

    def __init__(self, sam: Sam | SamEngine | object, method: str = "persam", *,
                 top_k: int = DEFAULT_TOP_K, box_margin: int = DEFAULT_BOX_MARGIN,
                 fit_steps: int | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        if isinstance(sam, SamEngine):
            self.engine = sam
        elif isinstance(getattr(sam, "engine", None), SamEngine):  # PerSAM / PerSAMF
            self.engine = sam.engine
            fit_steps = fit_steps if fit_steps is not None else getattr(sam, "fit_steps", None)
        elif isinstance(sam, Sam):
            self.engine = SamEngine(sam)
        else:
            raise TypeError(f"Tracker needs a Sam, SamEngine or PerSAM, not {type(sam).__name__}")
        self.method = method
        self.top_k = top_k
        self.box_margin = box_margin
        self.fit_steps = DEFAULT_STEPS if fit_steps is None else fit_steps
        self.objects: list[TrackedObject] = []
        self.frame_size: tuple[int, int] | None = None
        self.frame_index = -1
        self.timer = StageTimer(self.engine.device)  # seconds per stage over the tracker's life
        self._frame_start: dict[str, float] = {}
        self.decoder_calls = 0

    @property
    def object_ids(self) -> list[int]:
        return [obj.object_id for obj in self.objects]

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def stage_seconds(self) -> dict[str, float]:
        return self.timer.seconds

    @property
    def frame_seconds(self) -> dict[str, float]:
        """Seconds per stage of the current (last) frame."""
        stages = dict.fromkeys(FRAME_STAGES) | dict.fromkeys(self.timer.seconds)
        return {stage: self.timer.seconds.get(stage, 0.0) - self._frame_start.get(stage, 0.0)
                for stage in stages}

    def _stage(self, name: str) -> ContextManager:
        return self.timer(name)

    def _new_frame(self) -> None:
        self._frame_start = dict(self.timer.seconds)
        self.decoder_calls = 0

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        with self._stage("encode"):
            return self.engine.encode(image)

    def _decode(self, embedding: ImageEmbedding, **prompts):
        self.decoder_calls += 1
        return self.engine.decode(embedding, **prompts)

    # -- frame 0 -------------------------------------------------------------------------
    def start(self, first_frame: ImageLike, label_map: np.ndarray | str | os.PathLike) -> None:
        """Learn every object of ``label_map`` ((H, W) integer ids, 0 background; or the path
        of a palette/greyscale PNG of ids, e.g. DAVIS's first annotation) on ``first_frame``
        (path, PIL image or (H, W, 3) RGB array of the same size).

        Encodes the frame once; with PerSAM-F also fits each object's mask weights.
        """
        image = load_image(first_frame)
        labels = _check_label_map(label_map, image.shape[:2])
        ids = object_ids(labels)
        if not ids:
            raise ValueError("the first label map has no objects (all pixels are 0)")
        self._new_frame()
        self.frame_size = (int(image.shape[0]), int(image.shape[1]))
        self.frame_index = 0
        embedding = self._encode(image)
        self.objects = []
        with self._stage("prior"):
            for object_id in ids:
                mask = labels == object_id
                grid, fallback = video_target_grid(mask)
                if fallback:
                    warnings.warn(f"object {object_id} is too small for the 64x64 feature grid; "
                                  "using every cell it touches", stacklevel=2)
                cells = target_cells(embedding.features, grid)
                feature = normalized(max_mean_embedding(cells))
                self.objects.append(TrackedObject(object_id, feature, mask_box(mask)))
        if self.method == "persam-f":
            self._fit_weights(embedding, labels)

    def _fit_weights(self, embedding: ImageEmbedding, labels: np.ndarray) -> None:
        """PerSAM-F per object: decode frame 0 from the object's own top similarity point
        (multimask), then fit the two weights on the cached full-size logits."""
        for obj in self.objects:
            weights = fit_reference_weights(self._decode, [(embedding, labels == obj.object_id)],
                                            obj.target_feature, self.fit_steps, stage=self._stage)
            obj.mask_weights = weights.to(self.engine.device)

    def _similarities(self, embedding: ImageEmbedding) -> torch.Tensor:
        """(K, H, W) similarity maps of all objects, one matrix product."""
        targets = torch.stack([obj.target_feature for obj in self.objects])
        return similarity_map(embedding, targets.to(self.engine.device))

    # -- later frames --------------------------------------------------------------------
    def step(self, frame: ImageLike) -> np.ndarray:
        """Segment every object in the next frame. Returns the (H, W) uint8 label map."""
        if not self.objects or self.frame_size is None:
            raise RuntimeError("call start(first_frame, label_map) before step()")
        image = load_image(frame)
        if tuple(image.shape[:2]) != self.frame_size:
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]} (WxH) but the first frame "
                             f"is {self.frame_size[1]}x{self.frame_size[0]}")
        self._new_frame()
        self.frame_index += 1
        embedding = self._encode(image)  # the only encoder pass of this frame
        with self._stage("prior"):
            sims = self._similarities(embedding)
        logits = [self._segment_object(embedding, obj, sim) for obj, sim in zip(self.objects, sims)]
        with self._stage("compose"):
            labels = compose_label_map(logits, self.object_ids, self.frame_size)
            for obj in self.objects:
                box = mask_box(labels == obj.object_id)
                obj.visible = box is not None
                if box is not None:  # an absent object keeps its last known box
                    obj.box = box
        return labels

    def _segment_object(self, embedding: ImageEmbedding, obj: TrackedObject,
                        sim: torch.Tensor) -> torch.Tensor | None:
        """Full-size (H, W) logits of one object in this frame, or None if nothing was found."""
        with self._stage("prior"):
            positives = top_k_points(sim, self.top_k)
            prompt_box, centre = expand_box(obj.box, self.box_margin, self.frame_size)
            points = np.concatenate([positives, centre[None]])
            labels = np.ones(len(points), dtype=np.int64)
        with self._stage("decode"):
            first = self._decode(embedding, points=points, labels=labels, box=prompt_box, multimask=True)
            if obj.mask_weights is None:  # PerSAM: the largest of the three masks
                index = largest_mask_index(first.high_res_logits)
                start_logits = first.high_res_logits[index]
                start_low = first.low_res_logits[index]
                box = None  # docs/method.md 3.6 step 2 has no box
            else:  # PerSAM-F: the weighted sum of the three, whose box goes to step 2
                start_logits, start_low = weighted_masks(first.high_res_logits, first.low_res_logits,
                                                         obj.mask_weights)
                mask = start_logits > 0
                if not bool(mask.any()):  # as the paper's code: box of the best-scoring mask
                    mask = first.high_res_logits[int(torch.argmax(first.scores))] > 0
                box = mask_box(mask.cpu().numpy())
                if box is None:
                    return None
            fallback = start_logits if bool((start_logits > 0).any()) else None
            return self._refine(embedding, points, labels, start_low, box, fallback)

    def _refine(self, embedding: ImageEmbedding, points: np.ndarray, labels: np.ndarray,
                mask_input: torch.Tensor, box: np.ndarray | None,
                fallback: torch.Tensor | None) -> torch.Tensor | None:
        """docs/method.md 3.6 steps 2-3 from (256, 256) low-res logits; returns full-size logits, or
        ``fallback`` (the last non-empty full-size logits, or None) if step 2's mask is empty."""
        refined = cascaded_refinement(self._decode, self.engine.upsample, embedding, points, labels,
                                      mask_input[None], box)
        return fallback if refined is None else refined.logits

    # -- whole videos --------------------------------------------------------------------
    def track(self, frames: Iterable[ImageLike], label_map: np.ndarray | str | os.PathLike) -> Iterator[np.ndarray]:
        """Yield one (H, W) uint8 label map per frame: first the given ``label_map`` itself (an
        array or a PNG's path, as for :meth:`start`), then :meth:`step` for each later frame.
        Frames are read lazily."""
        label_map = _label_map_array(label_map)
        iterator = iter(frames)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("no frames to track") from None
        self.start(first, label_map)
        yield np.asarray(label_map).astype(np.uint8)
        for frame in iterator:
            yield self.step(frame)


def _label_map_array(label_map: np.ndarray | str | os.PathLike) -> np.ndarray:
    """A label map given as an array or as the path of a palette/greyscale PNG of ids."""
    return read_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else np.asarray(label_map)


def _check_label_map(label_map: np.ndarray | str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """(H, W) integer ids in 0..255 (or a label map PNG's path) of the given frame size -> uint8."""
    labels = _label_map_array(label_map)
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if labels.ndim != 2:
        raise ValueError(f"label map has shape {labels.shape}; expected (H, W) object ids")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label map has dtype {labels.dtype}; expected integer object ids")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label map ids must be in 0..255")
    if tuple(labels.shape) != tuple(size):
        raise ValueError(f"label map is {labels.shape[1]}x{labels.shape[0]} (WxH) but the first frame "
                         f"is {size[1]}x{size[0]}")
    return labels.astype(np.uint8)
