"""Presence and instance metrics (docs/method.md 11) against values worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from persam_eval import auroc, choose_threshold, instance_counts, match_instances, presence_counts


def test_auroc_counts_pairs_and_half_ties():
    # pairs (p, n): 0.9 beats all 3; 0.5 beats 0.1 and ties 0.5, loses to 0.7 -> (3 + 1 + 0.5) / 6
    assert auroc([0.9, 0.5], [0.1, 0.5, 0.7]) == pytest.approx(4.5 / 6)
    assert auroc([1, 2], [0, 0]) == 1.0 and auroc([0], [1]) == 0.0 and auroc([3, 3], [3]) == 0.5
    with pytest.raises(ValueError):
        auroc([], [1.0])


def test_precision_recall_f1_at_a_threshold():
    counts = presence_counts([0.9, 0.6, 0.3], [0.7, 0.2, 0.1, 0.65], threshold=0.6)
    # positives >= 0.6: 0.9, 0.6 (TP 2, FN 1); negatives >= 0.6: 0.7, 0.65 (FP 2, TN 2)
    assert (counts.true_positives, counts.false_negatives, counts.false_positives, counts.true_negatives) == (2, 1, 2, 2)
    assert counts.precision == pytest.approx(0.5) and counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert counts.balanced_accuracy == pytest.approx((2 / 3 + 0.5) / 2)
    nothing = presence_counts([0.1], [0.2], threshold=1.0)
    assert nothing.precision == 1.0 and nothing.recall == 0.0 and nothing.f1 == 0.0


def test_calibration_picks_the_documented_threshold():
    positives, negatives = [0.9, 0.8, 0.55, 0.4], [0.6, 0.5, 0.3, 0.2]
    # thresholds and balanced accuracy (TPR + TNR) / 2:
    # 0.2: (1 + 0)/2 = .5; 0.3: (1 + .25)/2; 0.4: (1 + .5)/2 = .75; 0.5: (.75 + .5)/2;
    # 0.55: (.75 + .75)/2 = .75; 0.6: (.5 + .75)/2; 0.8: (.5 + 1)/2 = .75; 0.9: (.25 + 1)/2
    # best .75 at 0.4, 0.55 and 0.8: ties go to the higher threshold
    chosen = choose_threshold(positives, negatives)
    assert chosen.threshold == 0.8 and chosen.balanced_accuracy == pytest.approx(0.75)
    assert chosen.precision == 1.0 and chosen.recall == 0.5
    # separable scores: the lowest positive
    assert choose_threshold([0.7, 0.9], [0.1, 0.65]).threshold == 0.7
    # a negative above every positive: +inf never wins over a real split
    assert choose_threshold([0.5], [0.4, 0.95]).threshold == 0.5


def square(x0, y0, size, shape=(20, 20)):
    mask = np.zeros(shape, bool)
    mask[y0: y0 + size, x0: x0 + size] = True
    return mask


def test_instance_matching_greedy_by_score_at_iou_half():
    truth = [square(0, 0, 4), square(10, 10, 4)]
    predicted = [square(0, 0, 4),            # IoU 1 with truth 0
                 square(1, 0, 4),            # IoU 12/20 = .6 with truth 0, already taken
                 square(11, 11, 4)]          # IoU 9/23 < .5 with truth 1
    assert match_instances(predicted, truth) == [(0, 0)]
    counts = instance_counts(predicted, truth)
    assert (counts.true_positives, counts.false_positives, counts.false_negatives) == (1, 2, 1)
    assert counts.count_accuracy == 0.0 and counts.precision == pytest.approx(1 / 3) and counts.recall == 0.5
    # exactly 0.5 matches: 2x4 inside a 4x4 (IoU 8/16)
    half = np.zeros((20, 20), bool)
    half[0:2, 0:4] = True
    assert match_instances([half], [square(0, 0, 4)]) == [(0, 0)]
    total = instance_counts([], []).add(instance_counts([square(0, 0, 3)], [square(0, 0, 3)]))
    assert (total.images, total.correct_counts, total.count_accuracy, total.precision, total.recall) == (2, 2, 1.0, 1.0, 1.0)
