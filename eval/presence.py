"""Presence and instance metrics for ``find`` (docs/method.md 11); pure functions on scores and masks.

Presence: each image has one score (the best instance's) and a label (the object is there or
not). Instances: predicted masks (best first) are matched to ground-truth masks at IoU >= 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["auroc", "PresenceCounts", "presence_counts", "choose_threshold", "match_instances",
           "InstanceCounts", "instance_counts", "MATCH_IOU"]

MATCH_IOU = 0.5


def _scores(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} scores contain NaN")
    return array


def _fraction(hits: int, misses: int, empty: float) -> float:
    """hits / (hits + misses), or ``empty`` when both are zero."""
    return hits / (hits + misses) if hits + misses else empty


def auroc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: the fraction of (positive,
    negative) pairs where the positive scores higher, ties counting one half."""
    positive, negative = _scores(positive_scores, "positive"), _scores(negative_scores, "negative")
    if positive.size == 0 or negative.size == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    higher = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((higher + 0.5 * ties) / (positive.size * negative.size))


@dataclass(frozen=True)
class PresenceCounts:
    """Decisions ``score >= threshold`` on labeled images."""

    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1.0 when nothing is called present (no false alarm was made)."""
        return _fraction(self.true_positives, self.false_positives, empty=1.0)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0.0 without positives."""
        return _fraction(self.true_positives, self.false_negatives, empty=0.0)

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """(TPR + TNR) / 2, each rate 0.0 when its class is empty."""
        positives = self.true_positives + self.false_negatives
        negatives = self.true_negatives + self.false_positives
        tpr = self.true_positives / positives if positives else 0.0
        tnr = self.true_negatives / negatives if negatives else 0.0
        return (tpr + tnr) / 2

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "tp": self.true_positives, "fp": self.false_positives,
                "fn": self.false_negatives, "tn": self.true_negatives, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "balanced_accuracy": self.balanced_accuracy}


def presence_counts(positive_scores: Sequence[float], negative_scores: Sequence[float],
                    threshold: float) -> PresenceCounts:
    """Confusion counts of the decision ``score >= threshold``."""
    positive, negative = _scores(positive_scores, "positive"), _scores(negative_scores, "negative")
    true_positives = int((positive >= threshold).sum())
    false_positives = int((negative >= threshold).sum())
    return PresenceCounts(float(threshold), true_positives, false_positives,
                          int(positive.size) - true_positives, int(negative.size) - false_positives)


def choose_threshold(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> PresenceCounts:
    """The threshold with the highest balanced accuracy; ties go to the higher threshold.

    Balanced accuracy only changes at observed scores, and on each step between two of them
    the highest threshold is the upper score itself, so the candidates are the observed scores
    (plus +inf, "nothing is present"): the result is always one of them.
    """
    positive, negative = _scores(positive_scores, "positive"), _scores(negative_scores, "negative")
    if positive.size == 0 or negative.size == 0:
        raise ValueError("calibration needs at least one positive and one negative score")
    best: PresenceCounts | None = None
    for threshold in sorted(set(positive.tolist()) | set(negative.tolist()) | {float("inf")}):
        counts = presence_counts(positive, negative, threshold)
        if best is None or counts.balanced_accuracy >= best.balanced_accuracy:
            best = counts
    return best


def _mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.count_nonzero(first | second)
    return np.count_nonzero(first & second) / union if union else 0.0


def match_instances(predicted: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                    min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Greedy matching by score: predictions in the given order (best first) each take the
    unmatched ground-truth mask of highest IoU, if that IoU >= ``min_iou``. Returns the
    (prediction index, ground-truth index) pairs."""
    taken: set[int] = set()
    pairs = []
    for p_index, prediction in enumerate(predicted):
        prediction = np.asarray(prediction, bool)
        best_iou, best_index = -1.0, -1
        for g_index, truth in enumerate(ground_truth):
            if g_index in taken:
                continue
            value = _mask_iou(prediction, np.asarray(truth, bool))
            if value > best_iou:
                best_iou, best_index = value, g_index
        if best_index >= 0 and best_iou >= min_iou:
            taken.add(best_index)
            pairs.append((p_index, best_index))
    return pairs


@dataclass
class InstanceCounts:
    """Instance matching summed over images: matched (TP), unmatched predictions (FP),
    unmatched ground truth (FN), and images whose predicted count equals the true count."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    images: int = 0
    correct_counts: int = 0

    def add(self, other: "InstanceCounts") -> "InstanceCounts":
        for name in ("true_positives", "false_positives", "false_negatives", "images", "correct_counts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def precision(self) -> float:
        """Matched / predicted instances; 1.0 without predictions."""
        return _fraction(self.true_positives, self.false_positives, empty=1.0)

    @property
    def recall(self) -> float:
        """Matched / true instances; 1.0 when there is nothing to find."""
        return _fraction(self.true_positives, self.false_negatives, empty=1.0)

    @property
    def count_accuracy(self) -> float:
        return _fraction(self.correct_counts, self.images - self.correct_counts, empty=0.0)

    def to_dict(self) -> dict:
        return {"tp": self.true_positives, "fp": self.false_positives, "fn": self.false_negatives,
                "images": self.images, "precision": self.precision, "recall": self.recall,
                "count_accuracy": self.count_accuracy}


def instance_counts(predicted: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                    min_iou: float = MATCH_IOU) -> InstanceCounts:
    """One image: matches of :func:`match_instances` and whether the counts agree."""
    matched = len(match_instances(predicted, ground_truth, min_iou))
    return InstanceCounts(matched, len(predicted) - matched, len(ground_truth) - matched, 1,
                          int(len(predicted) == len(ground_truth)))
