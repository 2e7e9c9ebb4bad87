"""The paper's PerSAM and PerSAM-F pipelines, re-created on the OFFICIAL SAM / MobileSAM modules.

Test-only. This module re-creates, step by step, what the public PerSAM code
(``persam.py``, ``persam_f.py`` and ``per_segment_anything/predictor.py`` of
ZrrSkywalker/Personalize-SAM) does to one object, on top of the official model classes loaded by
``parity/`` -- never on top of ``sam_core`` or ``persam``. It is the yardstick that
``tests/test_official_flow.py`` and ``scripts/bench_official.py`` hold our library against.

What is reproduced, and why each detail matters for bit-level parity:

* Images and the reference mask are read with ``cv2.imread`` then converted BGR -> RGB, as the
  paper's scripts do. The mask is handled as a 3-channel *image*: resized like an image, passed
  through the official ``Sam.preprocess`` (normalization with the pixel mean/std and zero padding),
  bilinearly reduced to 64x64, and channel 0 > 0 marks the target cells.
* The predictor steps are written out (the paper's ``SamPredictor`` imports torchvision, which
  is not installed here): resize of the uint8 image with PIL bilinear (what torchvision's
  ``resize`` does to a PIL image), ``Sam.preprocess``, ``image_encoder``; prompts scaled like
  ``ResizeLongestSide.apply_coords`` / ``apply_boxes`` (float64 numpy, then float32 tensors);
  ``prompt_encoder``, then the official ``mask_decoder`` -- or, when PerSAM's hooks are on,
  ``reference_mask_decoder_with_hooks`` (the official decoder written out with the hooks);
  ``Sam.postprocess_masks`` and the ``> 0`` threshold; numpy conversions where the predictor
  returns numpy (masks, scores, low-res logits) and a torch tensor for the full-size logits.
* Points come from ``topk`` on the flattened full-size similarity map, as the paper's
  ``point_selection`` does (``topk`` rather than ``argmax``: on exact ties the index ``topk``
  returns is what the paper gets).
* PerSAM-F training re-runs the decoder every step under ``no_grad`` (the paper calls
  ``predictor.predict`` inside the loop), with a ``(2, 1)`` parameter initialised to 1/3,
  weights ``(1 - w1 - w2, w1, w2)``, dice + sigmoid focal loss on the weighted full-size
  logits, ``AdamW(lr=1e-3, eps=1e-4)`` and ``CosineAnnealingLR(T_max=steps)``.
* The test-time flows: PerSAM (positive + negative point, guided first decode, two cascaded
  refinements) and PerSAM-F (positive point, weighted multimask logits, box, two refinements).
  Where the paper's code would crash (a box taken from an empty mask), this module raises
  :class:`PaperFlowError` instead of guessing a fallback.

Every stage is timed into a ``timings`` dict (seconds, accumulated) when one is passed, so the
benchmark can compare the paper's flow with ours stage by stage.

``encoder_cache`` (optional, off by default) lets tests reuse encoder outputs across calls: the
encoder is deterministic, so reusing its output changes no number, only the run time. The
paper's flow re-encodes every image it sets, including the reference image twice; benchmarks
must leave the cache off to time that faithfully.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, MutableMapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from parity import reference_mask_decoder_with_hooks

__all__ = [
    "PaperFlowError",
    "FlowResult",
    "PersamFTraining",
    "OfficialPredictor",
    "read_rgb",
    "point_selection",
    "dice_loss",
    "sigmoid_focal_loss",
    "MaskWeights",
    "official_persam",
    "official_persam_f",
    "learn_persam_target",
    "learn_persam_f",
    "segment_persam",
    "segment_persam_f",
    "mask_iou",
]

PathLike = Union[str, "os.PathLike[str]"]
Timings = MutableMapping[str, float]
EncoderCache = MutableMapping[str, torch.Tensor]

#: Long side of SAM's input (``image_encoder.img_size`` of every official model).
IMAGE_SIZE = 1024
#: PerSAM-F optimizer settings of the paper's ``persam_f.py``.
PAPER_LR = 1e-3
PAPER_EPS = 1e-4
PAPER_STEPS = 1000


class PaperFlowError(RuntimeError):
    """The paper's code would fail at this point (e.g. ``x.min()`` of an empty mask)."""


@dataclass
class FlowResult:
    """Outcome of the paper's flow on one test image.

    mask: (H, W) bool, the final mask (``masks[best_idx]`` of the last refinement);
    points: (N, 2) int64 (x, y) prompt points as ``point_selection`` returns them;
    labels: (N,) point labels (1 positive, 0 negative); score: predicted IoU of the final mask;
    best_index: index of the final mask among the three multimask outputs;
    box: (4,) the last box prompt (x0, y0, x1, y1) in original pixels.
    """

    mask: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    score: float
    best_index: int
    box: np.ndarray


@dataclass
class PersamFTraining:
    """What PerSAM-F learns on the reference image.

    weights: (3, 1) tensor ``(1 - w1 - w2, w1, w2)`` (still attached to the parameter, as in
    the paper, which multiplies the test logits with it); target_feature: (1, 256) normalized
    max/mean target feature; points / labels: the reference's positive location prior;
    losses: the loss of every step (before its update), for diagnostics.
    """

    weights: torch.Tensor
    target_feature: torch.Tensor
    points: np.ndarray
    labels: np.ndarray
    losses: List[float]

    @property
    def weights_numpy(self) -> np.ndarray:
        """The (3,) weights as float32 numpy."""
        return self.weights.detach().cpu().numpy().reshape(3)


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------


@contextmanager
def _timed(timings: Optional[Timings], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[stage]`` (if timings is given)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def read_rgb(path: PathLike) -> np.ndarray:
    """``cv2.imread`` + BGR -> RGB, as the paper reads both images and masks (H, W, 3) uint8."""
    array = cv2.imread(os.fspath(path))
    if array is None:  # cv2 signals unreadable files with None, not an exception
        raise FileNotFoundError(f"cv2 cannot read {path}")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def _preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """``ResizeLongestSide.get_preprocess_shape``: (h, w) with the long side scaled, rounded."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _resize_like_torchvision(image: np.ndarray) -> np.ndarray:
    """``ResizeLongestSide.apply_image``: torchvision's ``resize`` of a PIL image is PIL's
    bilinear ``Image.resize`` (which antialiases when shrinking) to (w, h)."""
    new_h, new_w = _preprocess_shape(image.shape[0], image.shape[1])
    return np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _apply_coords(coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
    """``ResizeLongestSide.apply_coords``: float64 copy, x and y scaled separately."""
    old_h, old_w = original_size
    new_h, new_w = _preprocess_shape(old_h, old_w)
    coords = np.array(coords, copy=True).astype(float)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def _apply_boxes(boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
    """``ResizeLongestSide.apply_boxes``: the two corners scaled as points."""
    return _apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def _array_key(array: np.ndarray) -> str:
    """Content key for the optional encoder cache (shape + bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _box_of(mask: np.ndarray, what: str) -> np.ndarray:
    """The paper's box of a mask: ``np.nonzero`` then min/max of x and y (int64)."""
    y, x = np.nonzero(mask)
    if x.size == 0:
        raise PaperFlowError(f"{what} is empty; the paper's code crashes here "
                             f"(x.min() of an empty array)")
    return np.array([x.min(), y.min(), x.max(), y.max()])


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ------------------------------------------------------------------------------------------
# The predictor, written out
# ------------------------------------------------------------------------------------------


class OfficialPredictor:
    """The paper's ``SamPredictor`` (set_image with an optional mask, predict with hooks) over an
    official ``Sam`` from ``parity/``.

    Args:
        sam: an official ``Sam`` (segment_anything or mobile_sam), in eval mode, weights loaded.
        timings: optional dict; ``encode`` (set_image) and ``decode`` (predict) seconds are
            accumulated into it.
        encoder_cache: optional dict shared across predictors to skip re-encoding an image whose
            features were already computed (see the module docstring); None re-encodes always.
    """

    def __init__(self, sam: nn.Module, timings: Optional[Timings] = None,
                 encoder_cache: Optional[EncoderCache] = None) -> None:
        self.model = sam
        self.timings = timings
        self.encoder_cache = encoder_cache
        self.features: Optional[torch.Tensor] = None
        self.original_size: Tuple[int, int] = (0, 0)
        self.input_size: Tuple[int, int] = (0, 0)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def set_image(self, image: np.ndarray, mask: Optional[np.ndarray] = None
                  ) -> Optional[torch.Tensor]:
        """Encode an RGB uint8 (H, W, 3) image; with ``mask`` (an (H, W, 3) uint8 image) also
        return the mask transformed like the image: (1, 3, 1024, 1024), normalized and padded."""
        with _timed(self.timings, "encode"):
            resized = _resize_like_torchvision(image)
            image_torch = torch.as_tensor(resized, device=self.device)
            image_torch = image_torch.permute(2, 0, 1).contiguous()[None, :, :, :]
            self.original_size = (int(image.shape[0]), int(image.shape[1]))
            self.input_size = (int(image_torch.shape[-2]), int(image_torch.shape[-1]))
            key = _array_key(image) if self.encoder_cache is not None else ""
            if self.encoder_cache is not None and key in self.encoder_cache:
                self.features = self.encoder_cache[key]
            else:
                self.features = self.model.image_encoder(self.model.preprocess(image_torch))
                if self.encoder_cache is not None:
                    self.encoder_cache[key] = self.features
            if mask is None:
                return None
            mask_torch = torch.as_tensor(_resize_like_torchvision(mask), device=self.device)
            mask_torch = mask_torch.permute(2, 0, 1).contiguous()[None, :, :, :]
            # The paper pads (and normalizes) the mask with the image's preprocess.
            return self.model.preprocess(mask_torch)

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        attn_sim: Optional[torch.Tensor] = None,
        target_embedding: Optional[torch.Tensor] = None,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """The paper's ``SamPredictor.predict``.

        Returns:
            masks (C, H, W) bool numpy, scores (C,) numpy, low-res logits (C, 256, 256) numpy,
            full-size logits (C, H, W) torch tensor.
        """
        if self.features is None:
            raise RuntimeError("set_image must be called before predict")
        with _timed(self.timings, "decode"):
            coords_torch = labels_torch = box_torch = mask_input_torch = None
            if point_coords is not None:
                assert point_labels is not None, "point_labels must come with point_coords"
                coords = _apply_coords(point_coords, self.original_size)
                coords_torch = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
                labels_torch = torch.as_tensor(point_labels, dtype=torch.int,
                                               device=self.device)[None]
            if box is not None:
                boxes = _apply_boxes(box, self.original_size)
                box_torch = torch.as_tensor(boxes, dtype=torch.float, device=self.device)[None]
            if mask_input is not None:
                mask_input_torch = torch.as_tensor(mask_input, dtype=torch.float,
                                                   device=self.device)[None]
            masks, scores, low_res, high_res = self._predict_torch(
                coords_torch, labels_torch, box_torch, mask_input_torch, multimask_output,
                attn_sim, target_embedding)
            return (masks[0].detach().cpu().numpy(), scores[0].detach().cpu().numpy(),
                    low_res[0].detach().cpu().numpy(), high_res[0])

    @torch.no_grad()
    def _predict_torch(self, coords, labels, boxes, mask_input, multimask_output,
                       attn_sim, target_embedding):
        """``SamPredictor.predict_torch``: prompt encoder, decoder, postprocess, threshold."""
        sparse, dense = self.model.prompt_encoder(
            points=(coords, labels) if coords is not None else None,
            boxes=boxes, masks=mask_input)
        image_pe = self.model.prompt_encoder.get_dense_pe()
        if attn_sim is None and target_embedding is None:
            low_res, scores = self.model.mask_decoder(
                image_embeddings=self.features, image_pe=image_pe,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask_output)
        else:
            # The official decoder has no hooks; the harness's written-out copy adds them.
            low_res, scores = reference_mask_decoder_with_hooks(
                self.model, self.features, image_pe, sparse, dense, multimask_output,
                attn_sim=attn_sim, target_embedding=target_embedding)
        high_res = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        masks = high_res > self.model.mask_threshold
        return masks, scores, low_res, high_res


# ------------------------------------------------------------------------------------------
# Location prior, losses, weights
# ------------------------------------------------------------------------------------------


def point_selection(sim: torch.Tensor, topk: int = 1, negative: bool = True
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """The paper's ``point_selection``: top-k (and, for PerSAM, bottom-k) of the full-size map.

    The flat index of ``topk`` is split into row = index // width and column = the rest, and the
    point is (column, row) = (x, y). Returns points (N, 2) int64 and labels (N,), positives
    first, then negatives.
    """
    width = sim.shape[1]
    flat = sim.flatten(0)

    def to_xy(indices: torch.Tensor) -> np.ndarray:
        rows = (indices // width).unsqueeze(0)
        cols = indices - rows * width
        return torch.cat((cols, rows), dim=0).permute(1, 0).cpu().numpy()

    points = [to_xy(flat.topk(topk)[1])]
    labels = [np.array([1] * topk)]
    if negative:
        points.append(to_xy(flat.topk(topk, largest=False)[1]))
        labels.append(np.array([0] * topk))
    return np.concatenate(points, axis=0), np.concatenate(labels, axis=0)


def _similarity(predictor: OfficialPredictor, target_feature: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the target feature (1, 256) to the current image's cells, brought
    to full size like a mask: x4 bilinear, then ``Sam.postprocess_masks``. Returns (H, W)."""
    test_feat = predictor.features.squeeze()
    channels, height, width = test_feat.shape
    test_feat = test_feat / test_feat.norm(dim=0, keepdim=True)
    test_feat = test_feat.reshape(channels, height * width)
    sim = (target_feature @ test_feat).reshape(1, 1, height, width)
    sim = F.interpolate(sim, scale_factor=4, mode="bilinear")
    sim = predictor.model.postprocess_masks(sim, input_size=predictor.input_size,
                                            original_size=predictor.original_size)
    return sim.squeeze()


def _target_cells(predictor: OfficialPredictor, ref_image: np.ndarray, ref_mask: np.ndarray
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encode the reference and return (features (64, 64, 256), target cells (N, 256))."""
    mask_input = predictor.set_image(ref_image, ref_mask)
    ref_feat = predictor.features.squeeze().permute(1, 2, 0)
    grid = F.interpolate(mask_input, size=ref_feat.shape[0:2], mode="bilinear")
    grid = grid.squeeze()[0]  # channel 0 of the image-shaped mask
    cells = ref_feat[grid > 0]
    if cells.shape[0] == 0:
        raise PaperFlowError("the reference mask covers no 64x64 feature cell; the paper's "
                             "code would average an empty set (NaN)")
    return ref_feat, cells


class MaskWeights(nn.Module):
    """The paper's ``Mask_Weights``: two free weights (2, 1), both 1/3 at the start."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(2, 1) / 3)

    def full(self) -> torch.Tensor:
        """(3, 1) weights ``(1 - w1 - w2, w1, w2)``."""
        return torch.cat((1 - self.weights.sum(0).unsqueeze(0), self.weights), dim=0)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of (1, P) logits against (1, P) {0, 1} targets, +1 smoothing on both sides."""
    probs = logits.sigmoid().flatten(1)
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum()


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2) -> torch.Tensor:
    """RetinaNet focal loss of (1, P) logits, mean over pixels (the paper's definition)."""
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * loss).mean(1).sum()


# ------------------------------------------------------------------------------------------
# PerSAM
# ------------------------------------------------------------------------------------------


def learn_persam_target(predictor: OfficialPredictor, ref_image: np.ndarray,
                        ref_mask: np.ndarray, timings: Optional[Timings] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """PerSAM's target: (raw target embedding (1, 1, 256), normalized target feature (1, 256))."""
    _, cells = _target_cells(predictor, ref_image, ref_mask)
    with _timed(timings, "target"):
        target_embedding = cells.mean(0).unsqueeze(0)
        target_feature = target_embedding / target_embedding.norm(dim=-1, keepdim=True)
        return target_embedding.unsqueeze(0), target_feature


def segment_persam(predictor: OfficialPredictor, image: np.ndarray,
                   target_embedding: torch.Tensor, target_feature: torch.Tensor,
                   timings: Optional[Timings] = None, hooks: bool = True) -> FlowResult:
    """The paper's PerSAM test loop body for one RGB image.

    ``hooks=False`` drops target-guided attention and target-semantic prompting from the first
    decode (a control for tests; the paper always uses them).
    """
    predictor.set_image(image)
    with _timed(timings, "prior"):
        sim = _similarity(predictor, target_feature)
        points, labels = point_selection(sim, topk=1, negative=True)
        # Target-guided attention: standardized map -> 64x64 -> sigmoid, (1, 1, 1, 4096).
        sim = (sim - sim.mean()) / torch.std(sim)
        sim = F.interpolate(sim.unsqueeze(0).unsqueeze(0), size=(64, 64), mode="bilinear")
        attn_sim = sim.sigmoid_().unsqueeze(0).flatten(3)
    # First step: both points, single mask, with the hooks.
    masks, scores, logits, _ = predictor.predict(
        point_coords=points, point_labels=labels, multimask_output=False,
        attn_sim=attn_sim if hooks else None,
        target_embedding=target_embedding if hooks else None)
    best = 0
    # Refinement 1: the first step's low-res logits as mask prompt, multimask.
    masks, scores, logits, _ = predictor.predict(
        point_coords=points, point_labels=labels, mask_input=logits[best:best + 1, :, :],
        multimask_output=True)
    best = int(np.argmax(scores))
    # Refinement 2: plus the box of the best mask.
    box = _box_of(masks[best], "PerSAM refinement-1 mask")
    masks, scores, logits, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=box[None, :],
        mask_input=logits[best:best + 1, :, :], multimask_output=True)
    best = int(np.argmax(scores))
    return FlowResult(mask=masks[best], points=points, labels=labels, score=float(scores[best]),
                      best_index=best, box=box)


def official_persam(official_sam: nn.Module, ref_image_path: PathLike, ref_mask_path: PathLike,
                    test_image_paths: Sequence[PathLike], timings: Optional[Timings] = None,
                    encoder_cache: Optional[EncoderCache] = None, hooks: bool = True
                    ) -> List[FlowResult]:
    """The paper's ``persam.py`` for one object: learn from the reference, segment each test
    image (the paper's loop includes the reference image itself as test image ``00``).

    Args:
        official_sam: an official ``Sam`` with weights loaded (``load_official_checkpoint``).
        ref_image_path, ref_mask_path: reference image and its mask (object in channel 0 of the
            RGB image, as PerSeg's annotations: red 128).
        test_image_paths: images to segment, in order.
        timings: optional dict receiving seconds per stage: ``read``, ``encode``, ``target``,
            ``prior``, ``decode``.
        encoder_cache: optional shared dict of encoder outputs (tests only; see module doc).
        hooks: PerSAM's decoder hooks on the first decode (always on in the paper).

    Returns:
        One :class:`FlowResult` per test image.
    """
    predictor = OfficialPredictor(official_sam, timings, encoder_cache)
    with _timed(timings, "read"):
        ref_image = read_rgb(ref_image_path)
        ref_mask = read_rgb(ref_mask_path)
    target_embedding, target_feature = learn_persam_target(predictor, ref_image, ref_mask, timings)
    results = []
    for path in test_image_paths:
        with _timed(timings, "read"):
            image = read_rgb(path)
        results.append(segment_persam(predictor, image, target_embedding, target_feature,
                                      timings, hooks=hooks))
    return results


# ------------------------------------------------------------------------------------------
# PerSAM-F
# ------------------------------------------------------------------------------------------


def learn_persam_f(predictor: OfficialPredictor, ref_image: np.ndarray, ref_mask: np.ndarray,
                   steps: int = PAPER_STEPS, timings: Optional[Timings] = None) -> PersamFTraining:
    """The paper's PerSAM-F learning on the reference (``persam_f.py`` before its test loop).

    Timings: ``target`` (features, prior), ``fit`` (the whole training loop), of which
    ``fit_decode`` is the decoder re-run every step.
    """
    # The loss target is the original-size mask, channel 0 > 0, flattened (1, H*W).
    gt_mask = (torch.tensor(ref_mask)[:, :, 0] > 0).float().unsqueeze(0).flatten(1)
    gt_mask = gt_mask.to(predictor.device)
    ref_feat, cells = _target_cells(predictor, ref_image, ref_mask)
    with _timed(timings, "target"):
        target_feature = (torch.max(cells, dim=0)[0] / 2 + cells.mean(0) / 2).unsqueeze(0)
        height, width, channels = ref_feat.shape
        target_feature = target_feature / target_feature.norm(dim=-1, keepdim=True)
        # The paper normalizes the reference cells in (h, w, C) layout, then flattens.
        ref_feat = ref_feat / ref_feat.norm(dim=-1, keepdim=True)
        ref_feat = ref_feat.permute(2, 0, 1).reshape(channels, height * width)
        sim = (target_feature @ ref_feat).reshape(1, 1, height, width)
        sim = F.interpolate(sim, scale_factor=4, mode="bilinear")
        sim = predictor.model.postprocess_masks(sim, input_size=predictor.input_size,
                                                original_size=predictor.original_size).squeeze()
        points, labels = point_selection(sim, topk=1, negative=False)

    mask_weights = MaskWeights().to(predictor.device)
    mask_weights.train()
    optimizer = torch.optim.AdamW(mask_weights.parameters(), lr=PAPER_LR, eps=PAPER_EPS)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses: List[float] = []
    with _timed(timings, "fit"):
        for _ in range(steps):
            # The paper re-runs the (frozen, no_grad) decoder on the same inputs every step.
            with _timed(timings, "fit_decode"):
                _, _, _, logits_high = predictor.predict(
                    point_coords=points, point_labels=labels, multimask_output=True)
            logits_high = logits_high.flatten(1)
            weighted = (logits_high * mask_weights.full()).sum(0).unsqueeze(0)
            loss = dice_loss(weighted, gt_mask) + sigmoid_focal_loss(weighted, gt_mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
    mask_weights.eval()
    return PersamFTraining(weights=mask_weights.full(), target_feature=target_feature,
                           points=points, labels=labels, losses=losses)


def segment_persam_f(predictor: OfficialPredictor, image: np.ndarray, training: PersamFTraining,
                     timings: Optional[Timings] = None) -> FlowResult:
    """The paper's PerSAM-F test loop body for one RGB image."""
    weights = training.weights
    weights_np = weights.detach().cpu().numpy()  # (3, 1)
    predictor.set_image(image)
    with _timed(timings, "prior"):
        sim = _similarity(predictor, training.target_feature)
        points, labels = point_selection(sim, topk=1, negative=False)
    # First step: positive point, three masks, mixed with the learned weights.
    _, _, logits, logits_high = predictor.predict(
        point_coords=points, point_labels=labels, multimask_output=True)
    with _timed(timings, "decode"):
        weighted_high = (logits_high * weights.unsqueeze(-1)).sum(0)
        mask = (weighted_high > 0).detach().cpu().numpy()
        weighted_low = (logits * weights_np[..., None]).sum(0)  # numpy, as the paper
    # Refinement 1: box of the weighted mask + weighted low-res logits.
    box = _box_of(mask, "PerSAM-F weighted first-step mask")
    masks, scores, logits, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=box[None, :],
        mask_input=weighted_low[None, :, :], multimask_output=True)
    best = int(np.argmax(scores))
    # Refinement 2: box of the best mask + its low-res logits.
    box = _box_of(masks[best], "PerSAM-F refinement-1 mask")
    masks, scores, logits, _ = predictor.predict(
        point_coords=points, point_labels=labels, box=box[None, :],
        mask_input=logits[best:best + 1, :, :], multimask_output=True)
    best = int(np.argmax(scores))
    return FlowResult(mask=masks[best], points=points, labels=labels, score=float(scores[best]),
                      best_index=best, box=box)


def official_persam_f(official_sam: nn.Module, ref_image_path: PathLike, ref_mask_path: PathLike,
                      test_image_paths: Sequence[PathLike], steps: int = PAPER_STEPS,
                      timings: Optional[Timings] = None,
                      encoder_cache: Optional[EncoderCache] = None,
                      ) -> Tuple[np.ndarray, List[FlowResult]]:
    """The paper's ``persam_f.py`` for one object.

    Args:
        official_sam: an official ``Sam`` with weights loaded.
        ref_image_path, ref_mask_path: reference image and mask.
        test_image_paths: images to segment (may be empty to only train).
        steps: training steps (the paper: 1000); the cosine schedule spans exactly ``steps``.
        timings: optional dict: ``read``, ``encode``, ``target``, ``fit`` (the training loop,
            of which ``fit_decode`` its decoder re-runs), ``prior``, ``decode`` (every
            predictor call, the training loop's included, plus the logit weighting).
        encoder_cache: optional shared dict of encoder outputs (tests only).

    Returns:
        (weights (3,) float32 ``(1 - w1 - w2, w1, w2)``, one :class:`FlowResult` per test image).
    """
    predictor = OfficialPredictor(official_sam, timings, encoder_cache)
    with _timed(timings, "read"):
        ref_image = read_rgb(ref_image_path)
        ref_mask = read_rgb(ref_mask_path)
    training = learn_persam_f(predictor, ref_image, ref_mask, steps=steps, timings=timings)
    results = []
    for path in test_image_paths:
        with _timed(timings, "read"):
            image = read_rgb(path)
        results.append(segment_persam_f(predictor, image, training, timings))
    return training.weights_numpy, results
