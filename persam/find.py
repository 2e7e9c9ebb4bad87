"""All instances of a concept in an image, and whether it is there at all (docs/method.md 11).

``segment`` keeps the paper's behaviour: exactly one mask. ``find`` starts from the local maxima
of the 64x64 similarity grid and decodes candidates as PerSAM (or PerSAM-F) does. The first
decoder step runs in rounds, strongest candidates first, CANDIDATE_CHUNK prompt sets per call;
after each round, masks that duplicate an already kept one are dropped, and a candidate not yet
decoded whose prompt point lies inside a kept mask is skipped (it would only find that object
again). The kept candidates are then refined together, one batched decoder call per step. Each
final mask is scored by SAM's predicted IoU times the mean similarity inside it; duplicates are
removed, and the instances whose score reaches the concept's presence threshold are kept.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sam_core.engine import ImageEmbedding, SamEngine
from sam_core.transforms import scale_coords

from .concept import Calibration, Concept
from .masks import mask_box
from .prior import attention_guidance, best_and_worst_points, similarity_grid, upsample_similarity

# Uncalibrated presence threshold on the instance score (IoU x (S + 1) / 2, in [0, 1] for a
# trained SAM). A guess, not a measurement: calibrate a concept (``persam calibrate``) to
# replace it with a threshold chosen on your own positive and negative images.
DEFAULT_THRESHOLD = 0.6
# A grid cell is a candidate when it is a 3x3 local maximum with similarity at least
# mean + CANDIDATE_RANGE_FRACTION * (max - mean) of the image's cells, and never below
# CANDIDATE_MIN_SIMILARITY (cosine): weak maxima are background.
CANDIDATE_RANGE_FRACTION = 0.5
CANDIDATE_MIN_SIMILARITY = 0.2
CANDIDATES_PER_INSTANCE = 3  # at most this many candidates per requested instance
# An instance is dropped when its intersection with a better one exceeds this fraction of the
# smaller mask.
MAX_OVERLAP = 0.5
# Prompt sets per first-step decoder call: large enough to batch the decoder's work, small
# enough that candidates inside an earlier round's masks are skipped rather than decoded.
CANDIDATE_CHUNK = 8
_CELL_PIXELS = 16  # one 64x64 grid cell spans 16x16 pixels of SAM's 1024x1024 input


@dataclass
class Instance:
    """One copy of the object.

    mask: (H, W) bool; score = iou_score * similarity; iou_score: SAM's predicted IoU of the
    final mask; similarity: mean of (S + 1) / 2 inside the mask (S the full-size similarity
    map); box: int [x0, y0, x1, y1], inclusive pixel bounds of the mask; points (N, 2) (x, y)
    and labels (N,) (1 object, 0 background): the prompt points it was decoded from.
    """

    mask: np.ndarray
    score: float
    iou_score: float
    similarity: float
    box: np.ndarray
    points: np.ndarray
    labels: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def to_dict(self) -> dict:
        """JSON-ready fields (the mask left out): score, iou_score, similarity, box, area."""
        return {"score": float(self.score), "iou_score": float(self.iou_score),
                "similarity": float(self.similarity), "box": [int(v) for v in self.box],
                "area": self.area}


@dataclass
class Detection:
    """The answer of ``find`` for one image and one concept.

    present: at least one instance reached ``threshold``; score: the best instance's score,
    whether or not it reached the threshold (0.0 when there is no candidate at all), so
    ``present == (score >= threshold)``; instances: those at or above ``threshold``, best first;
    image_size: (H, W) of the image, so an empty detection still has a label map.
    """

    present: bool
    score: float
    instances: list[Instance]
    threshold: float
    image_size: tuple[int, int] = (0, 0)

    def label_map(self) -> np.ndarray:
        """(H, W) uint8: 0 background, i where instance i (1-based, score order) is; where
        instances overlap (at most the suppression rule allows) the better one wins."""
        size = self.instances[0].mask.shape if self.instances else self.image_size
        labels = np.zeros(size, np.uint8)
        for index in range(len(self.instances), 0, -1):
            labels[self.instances[index - 1].mask] = index
        return labels

    def to_dict(self) -> dict:
        """JSON-ready fields, as in ``find``'s results.jsonl: present, score, instances."""
        return {"present": bool(self.present), "score": float(self.score),
                "instances": [instance.to_dict() for instance in self.instances]}


def resolve_threshold(concept: Concept, threshold: float | None) -> float:
    """The explicit threshold, else the concept's calibrated one, else DEFAULT_THRESHOLD."""
    if threshold is not None:
        return float(threshold)
    if concept.calibration is not None:
        return float(concept.calibration.threshold)
    return DEFAULT_THRESHOLD


# -- candidates --------------------------------------------------------------------------
def valid_cells(input_size: tuple[int, int], grid_size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    """(64, 64) bool: cells that cover part of the resized image (the rest is zero padding)."""
    rows = torch.arange(grid_size[0]) * _CELL_PIXELS < input_size[0]
    cols = torch.arange(grid_size[1]) * _CELL_PIXELS < input_size[1]
    return rows[:, None] & cols[None, :]


def grid_candidates(grid: torch.Tensor, input_size: tuple[int, int], max_candidates: int,
                    range_fraction: float = CANDIDATE_RANGE_FRACTION,
                    min_similarity: float = CANDIDATE_MIN_SIMILARITY) -> list[tuple[int, int]]:
    """(row, col) cells of the 64x64 similarity grid that are 3x3 local maxima above the
    candidate floor, strongest first (ties: row-major), at most ``max_candidates``.

    A plateau (adjacent cells of equal value, all maxima) counts once, at its first cell in
    row-major order. Padding cells never count.
    """
    grid = grid.detach().float().cpu()
    valid = valid_cells(input_size, tuple(grid.shape))
    values = grid[valid]
    if values.numel() == 0 or max_candidates < 1:
        return []
    top, mean = float(values.max()), float(values.mean())
    floor = max(min_similarity, mean + range_fraction * (top - mean))
    masked = torch.where(valid, grid, torch.tensor(float("-inf")))
    pooled = F.max_pool2d(masked[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
    maxima = (masked == pooled) & valid & (masked >= floor)
    # Two adjacent maxima have equal values, so the 8-connected components of the maxima
    # are exactly the plateaus.
    count, components = cv2.connectedComponents(maxima.numpy().astype(np.uint8), connectivity=8)
    flat = components.reshape(-1)
    width = grid.shape[1]
    firsts = [int(np.argmax(flat == label)) for label in range(1, count)]
    flat_values = grid.reshape(-1).numpy()
    firsts.sort(key=lambda index: (-flat_values[index], index))
    return [(index // width, index % width) for index in firsts[:max_candidates]]


def _cell_span(index: int, input_length: int, original_length: int) -> tuple[int, int]:
    """Inclusive range of original-image pixels whose centres fall in cell ``index`` (one axis);
    the nearest pixel when the image is so small that no centre does."""
    scale = input_length / original_length
    low = int(np.ceil(_CELL_PIXELS * index / scale - 0.5))
    high = int(np.ceil(_CELL_PIXELS * (index + 1) / scale - 0.5)) - 1
    low, high = max(low, 0), min(high, original_length - 1)
    if low > high:
        low = high = min(max(int((_CELL_PIXELS * index + _CELL_PIXELS / 2) / scale), 0), original_length - 1)
    return low, high


def candidate_point(sim: torch.Tensor, cell: tuple[int, int], embedding: ImageEmbedding) -> tuple[int, int]:
    """(x, y) of the full-size similarity maximum inside a grid cell (ties: row-major)."""
    (row, col), (height, width) = cell, embedding.original_size
    y0, y1 = _cell_span(row, embedding.input_size[0], height)
    x0, x1 = _cell_span(col, embedding.input_size[1], width)
    (x, y), _ = best_and_worst_points(sim[y0: y1 + 1, x0: x1 + 1])
    return x0 + x, y0 + y


# -- scoring and suppression ---------------------------------------------------------------
def suppress(instances: Sequence[Instance], max_overlap: float = MAX_OVERLAP) -> list[Instance]:
    """Best first; drop empty masks and any instance whose intersection with a kept one
    exceeds ``max_overlap`` of the smaller mask's area."""
    kept: list[Instance] = []
    for instance in sorted(instances, key=lambda item: -item.score):
        area = instance.area
        if area == 0:
            continue
        if all(np.count_nonzero(instance.mask & other.mask) <= max_overlap * min(area, other.area)
               for other in kept):
            kept.append(instance)
    return kept


def make_detection(instances: Sequence[Instance], threshold: float, max_instances: int,
                   image_size: tuple[int, int]) -> Detection:
    """Suppress duplicates, then keep at most ``max_instances`` instances scoring >= threshold.
    The detection's score is the best instance's, kept or not, so that an absent image still
    says how near it came (presence is score >= threshold)."""
    distinct = suppress(instances)
    kept = [item for item in distinct if item.score >= threshold][:max_instances]
    return Detection(present=bool(kept), score=distinct[0].score if distinct else 0.0, instances=kept,
                     threshold=float(threshold), image_size=tuple(image_size))


# -- batched PerSAM decoding ---------------------------------------------------------------
@dataclass
class _Decoded:
    """Low-res logits (B, 256, 256) and predicted IoU (B,) of B candidates; ``alive`` (B,) marks
    those still worth a mask (not a duplicate of a stronger candidate, not empty); ``decoded``
    (B,) those that went through the first decoder step (the others have zero logits)."""

    low_res: torch.Tensor
    scores: torch.Tensor
    alive: np.ndarray
    decoded: np.ndarray


def _best(scores: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the highest-scoring of the K masks: (B, 256, 256) logits and (B,) scores."""
    best = torch.argmax(scores, dim=1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    return low_res[rows, best], scores[rows, best]


def full_size_masks(engine: SamEngine, embedding: ImageEmbedding, low_res: torch.Tensor,
                    chunk: int = 8) -> torch.Tensor:
    """(B, 256, 256) low-res logits -> (B, H, W) bool masks, upsampled a few at a time so that
    float maps of many candidates never coexist at full size."""
    if low_res.shape[0] == 0:
        return torch.zeros((0, *embedding.original_size), dtype=torch.bool, device=low_res.device)
    return torch.cat([engine.upsample(embedding, low_res[start: start + chunk]) > 0
                      for start in range(0, low_res.shape[0], chunk)])


def _boxes(engine: SamEngine, embedding: ImageEmbedding, low_res: torch.Tensor) -> list[np.ndarray | None]:
    """Boxes of the full-size masks of (B, 256, 256) logits (None for an empty mask)."""
    return [mask_box(mask) for mask in full_size_masks(engine, embedding, low_res).cpu().numpy()]


def distinct_candidates(low_res: torch.Tensor, input_size: tuple[int, int],
                        max_overlap: float = MAX_OVERLAP) -> np.ndarray:
    """(B,) bool: candidates (strongest first) whose first mask, compared at low resolution
    inside the image, is not a duplicate of a stronger candidate's by the suppression rule.
    Candidates on the same object are refined once, not once per local maximum."""
    rows, cols = -(-input_size[0] // 4), -(-input_size[1] // 4)  # the image part of 256x256
    masks = (low_res[:, :rows, :cols] > 0).flatten(1).float()
    areas = masks.sum(1).tolist()
    overlaps = (masks @ masks.T).tolist()
    keep: list[int] = []
    for i in range(len(areas)):
        if all(overlaps[i][j] <= max_overlap * min(areas[i], areas[j]) for j in keep):
            keep.append(i)
    alive = np.zeros(len(areas), bool)
    alive[keep] = True
    return alive


def refine_batch(engine: SamEngine, embedding: ImageEmbedding, points: np.ndarray, labels: np.ndarray,
                 earlier: _Decoded, first_boxes: np.ndarray | None = None) -> _Decoded:
    """docs/method.md 3.6 steps 2-3 for the ``alive`` candidates, one decoder call per step (see
    ``refine.cascaded_refinement`` for one prompt set). ``first_boxes`` (B, 4): PerSAM-F's box
    prompts for step 2. A candidate whose step-2 mask is empty keeps its ``earlier`` result, as
    ``segment`` falls back to its last non-empty mask."""
    result = replace(earlier, low_res=earlier.low_res.clone(), scores=earlier.scores.clone(),
                     alive=earlier.alive.copy())
    rows = np.flatnonzero(earlier.alive)
    if rows.size == 0:
        return result
    decoded = engine.decode_batch(embedding, points[rows], labels[rows],
                                  None if first_boxes is None else first_boxes[rows],
                                  earlier.low_res[rows][:, None], multimask=True)
    step_low, _ = _best(decoded.scores, decoded.low_res_logits)
    boxes = _boxes(engine, embedding, step_low)
    has_box = np.array([box is not None for box in boxes])
    if not has_box.any():
        return result
    decoded = engine.decode_batch(embedding, points[rows[has_box]], labels[rows[has_box]],
                                  np.stack([box for box in boxes if box is not None]),
                                  step_low[has_box][:, None], multimask=True)
    index = torch.as_tensor(rows[has_box], device=result.low_res.device)
    result.low_res[index], result.scores[index] = _best(decoded.scores, decoded.low_res_logits)
    return result


def prompt_low_res_pixel(points: np.ndarray, labels: np.ndarray,
                         embedding: ImageEmbedding) -> tuple[int, int] | None:
    """(row, col) of the 256x256 low-res mask where one prompt set's first positive point lands
    (the spot the prompt encoder puts it: resized frame plus half a pixel), or None without one."""
    positive = np.flatnonzero(np.asarray(labels) == 1)
    if positive.size == 0:
        return None
    x, y = scale_coords(np.asarray(points, float)[positive[0]], embedding.original_size) + 0.5
    return min(int(y // 4), 255), min(int(x // 4), 255)


def first_step_rounds(first_decode: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]],
                      points: np.ndarray, labels: np.ndarray, embedding: ImageEmbedding,
                      chunk: int = CANDIDATE_CHUNK, skip_covered: bool = True) -> _Decoded:
    """Step 1 of the cascade for B candidates (strongest first), in rounds of ``chunk``.

    ``first_decode(rows)`` returns the (n, 256, 256) logits and (n,) scores of those rows. After
    each round, its masks are checked against the masks kept so far with ``distinct_candidates``'
    rule (all kept masks come from stronger candidates), and every candidate not yet decoded whose
    point (``prompt_low_res_pixel``) lies inside a kept mask is skipped: it would be decoded into
    that object again and dropped as its duplicate. ``skip_covered=False`` decodes every candidate
    in one call (nothing can be skipped, so rounds would only add calls).
    """
    count = len(points)
    if not skip_covered:
        chunk = count
    pixels = [prompt_low_res_pixel(points[row], labels[row], embedding) for row in range(count)]
    decoded, alive = np.zeros(count, bool), np.zeros(count, bool)
    low_res = scores = covered = None
    kept: list[int] = []
    pending = list(range(count))
    while pending:
        rows, pending = pending[:chunk], pending[chunk:]
        round_low, round_scores = first_decode(np.array(rows))
        if low_res is None:
            low_res = round_low.new_zeros((count, *round_low.shape[1:]))
            scores = round_scores.new_zeros(count)
            covered = torch.zeros(round_low.shape[1:], dtype=torch.bool)
        index = torch.as_tensor(rows, device=low_res.device)
        low_res[index], scores[index] = round_low, round_scores
        decoded[rows] = True
        earlier = low_res[torch.as_tensor(kept, dtype=torch.long, device=low_res.device)]
        distinct = distinct_candidates(torch.cat([earlier, round_low]), embedding.input_size)[len(kept):]
        new = [row for row, keep in zip(rows, distinct) if keep]
        kept += new
        if skip_covered and new and pending:
            covered |= (low_res[torch.as_tensor(new, device=low_res.device)] > 0).any(0).cpu()
            pending = [row for row in pending if pixels[row] is None or not covered[pixels[row]]]
    alive[kept] = True
    return _Decoded(low_res, scores, alive, decoded)


def decode_persam(engine: SamEngine, embedding: ImageEmbedding, concept: Concept, points: np.ndarray,
                  labels: np.ndarray, attn_sim: torch.Tensor, skip_covered: bool = True) -> _Decoded:
    """docs/method.md 3.4-3.6 for B prompt sets (B, N, 2): guided first decode (in rounds, see
    ``first_step_rounds``), then two refinements of the kept candidates."""
    target_embedding = concept.target_embedding.to(engine.device).reshape(1, 1, -1)

    def first_decode(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        first = engine.decode_batch(embedding, points[rows], labels[rows], multimask=False, attn_sim=attn_sim,
                                    target_embedding=target_embedding)
        return first.low_res_logits[:, 0], first.scores[:, 0]

    earlier = first_step_rounds(first_decode, points, labels, embedding, skip_covered=skip_covered)
    return refine_batch(engine, embedding, points, labels, earlier)


def decode_persam_f(engine: SamEngine, embedding: ImageEmbedding, concept: Concept, points: np.ndarray,
                    labels: np.ndarray, skip_covered: bool = True) -> _Decoded:
    """docs/method.md 4 for B prompt sets: weighted multimask decode (in rounds, see
    ``first_step_rounds``), then two refinements of the kept candidates with boxes."""
    weights = concept.mask_weights.to(engine.device).float()

    def first_decode(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        first = engine.decode_batch(embedding, points[rows], labels[rows], multimask=True)
        return ((first.low_res_logits * weights[None, :, None, None]).sum(1),
                (first.scores * weights[None]).sum(1))

    earlier = first_step_rounds(first_decode, points, labels, embedding, skip_covered=skip_covered)
    boxes = np.zeros((len(points), 4), int)
    rows = np.flatnonzero(earlier.alive)
    for row, box in zip(rows, _boxes(engine, embedding, earlier.low_res[rows])):
        earlier.alive[row] = box is not None  # an empty weighted mask has no box: nothing to refine
        if box is not None:
            boxes[row] = box
    return refine_batch(engine, embedding, points, labels, earlier, boxes)


def candidate_prompts(concept: Concept, sim: torch.Tensor, grid: torch.Tensor, embedding: ImageEmbedding,
                      max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt points (B, N, 2) and labels (B, N) of every candidate: its point as the positive,
    plus (PerSAM, not PerSAM-F) the global similarity minimum as the negative."""
    cells = grid_candidates(grid, embedding.input_size, max_candidates)
    positives = [candidate_point(sim, cell, embedding) for cell in cells]
    if concept.method == "persam-f":
        return np.array(positives, float).reshape(-1, 1, 2), np.ones((len(positives), 1), int)
    _, negative = best_and_worst_points(sim)
    points = np.array([[positive, negative] for positive in positives], float).reshape(-1, 2, 2)
    return points, np.tile(np.array([1, 0]), (len(positives), 1))


def find_instances(engine: SamEngine, embedding: ImageEmbedding, concept: Concept, max_candidates: int,
                   stage: Callable[[str], object] | None = None,
                   prompts: tuple[np.ndarray, np.ndarray] | None = None,
                   stats: dict | None = None, skip_covered: bool = True) -> list[Instance]:
    """The distinct candidates of ``concept`` decoded and scored, before suppression and threshold.

    ``prompts`` (points (B, N, 2), labels (B, N)) replaces the candidates from the grid.
    ``stage(name)`` is an optional timing context manager (``PerSAM._stage``). ``stats``, if
    given, receives "candidates", "decoded" (those that went through the first decoder step)
    and "refined" (those left after step-1 duplicates). ``skip_covered=False`` (for comparisons)
    decodes every candidate, as before the rounds of ``first_step_rounds``.
    """
    stage = stage or (lambda name: nullcontext())
    with stage("prior"):
        grid = similarity_grid(embedding, concept.target_feature.to(engine.device))
        sim = upsample_similarity(grid, embedding)
        points, labels = prompts if prompts is not None else candidate_prompts(
            concept, sim, grid, embedding, max_candidates)
        persam_f = concept.method == "persam-f"
        attn_sim = None if persam_f or len(points) == 0 else attention_guidance(sim)
    if len(points) == 0:
        return []
    with stage("decode"):
        if persam_f:
            decoded = decode_persam_f(engine, embedding, concept, points, labels, skip_covered)
        else:
            decoded = decode_persam(engine, embedding, concept, points, labels, attn_sim, skip_covered)
        rows = np.flatnonzero(decoded.alive)
        if stats is not None:
            stats.update(candidates=len(points), decoded=int(decoded.decoded.sum()),
                         refined=int(decoded.alive.sum()))
        masks = full_size_masks(engine, embedding, decoded.low_res[rows])
    instances = []
    unit_sim = (sim + 1) / 2
    for k, row in enumerate(rows):
        mask = masks[k]
        area = int(mask.sum())
        if area == 0:
            continue
        similarity = float(unit_sim[mask].mean())
        iou_score = float(decoded.scores[row])
        mask_array = mask.cpu().numpy()
        instances.append(Instance(mask=mask_array, score=iou_score * similarity, iou_score=iou_score,
                                  similarity=similarity, box=mask_box(mask_array).astype(int),
                                  points=points[row].astype(float), labels=labels[row].astype(int)))
    return instances


def detect(engine: SamEngine, embedding: ImageEmbedding, concept: Concept, threshold: float | None = None,
           max_instances: int = 10, stage: Callable[[str], object] | None = None,
           max_candidates: int | None = None, stats: dict | None = None) -> Detection:
    """``PerSAM.find_embedding``: candidates (at most ``max_candidates``, default
    CANDIDATES_PER_INSTANCE x ``max_instances``), batched decoding, suppression, threshold."""
    if max_instances < 1:
        raise ValueError(f"max_instances must be at least 1, got {max_instances}")
    if max_candidates is None:
        max_candidates = CANDIDATES_PER_INSTANCE * max_instances
    if embedding.features.dtype != torch.float32 or embedding.features.device != engine.device:
        # e.g. an fp16 embedding loaded from an index: the decoder and the prior work in fp32
        embedding = replace(embedding, features=embedding.features.to(engine.device, torch.float32))
    instances = find_instances(engine, embedding, concept, max_candidates, stage, stats=stats)
    return make_detection(instances, resolve_threshold(concept, threshold), max_instances,
                          embedding.original_size)


# -- calibration ---------------------------------------------------------------------------
def calibration_from_scores(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> Calibration:
    """docs/method.md 11: the threshold with the highest balanced accuracy on the best-instance scores of
    positive and negative images (ties: the higher), with AUROC and precision / recall there."""
    from persam_eval import auroc, choose_threshold

    chosen = choose_threshold(positive_scores, negative_scores)
    return Calibration(threshold=chosen.threshold, n_pos=len(positive_scores), n_neg=len(negative_scores),
                       auroc=auroc(positive_scores, negative_scores), precision=chosen.precision,
                       recall=chosen.recall)


def best_score(detection: Detection) -> float:
    """The presence score of an image: its best instance's score (0.0 with no candidate)."""
    return detection.score
