"""Metrics of persam_eval against values worked out by hand (and a brute-force restatement
of the DAVIS toolkit's boundary definition)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from persam_eval import (
    PredictionError,
    boundary_f,
    boundary_tolerance_px,
    db_statistics,
    disk,
    iou,
    score_sequence,
    seg_to_boundary,
)


def grid(picture: str) -> np.ndarray:
    """Bool mask from rows of '#' (True) and '.' (False)."""
    rows = [row.strip() for row in picture.strip().splitlines()]
    return np.array([[char == "#" for char in row] for row in rows], dtype=bool)


def rect(shape: tuple[int, int], y: int, x: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


# ---------------------------------------------------------------- J (region IoU)


def test_iou_of_overlapping_squares():
    # gt: rows 1-3 x cols 1-3 (9 px); pred: rows 1-3 x cols 2-4 (9 px).
    # intersection = rows 1-3 x cols 2-3 = 6, union = 9 + 9 - 6 = 12 -> J = 0.5
    gt = rect((5, 5), 1, 1, 3, 3)
    pred = rect((5, 5), 1, 2, 3, 3)
    assert iou(pred, gt) == 0.5


def test_iou_ignores_void_pixels():
    # Same squares, column 4 void: pred loses its 3 pixels there, union = 12 - 3 = 9,
    # intersection still 6 -> J = 6 / 9.
    gt = rect((5, 5), 1, 1, 3, 3)
    pred = rect((5, 5), 1, 2, 3, 3)
    void = np.zeros((5, 5), dtype=bool)
    void[:, 4] = True
    assert iou(pred, gt, void) == pytest.approx(6 / 9)


def test_iou_empty_cases():
    empty = np.zeros((4, 4), dtype=bool)
    some = rect((4, 4), 0, 0, 2, 2)
    assert iou(empty, empty) == 1.0  # both empty: a correct "absent"
    assert iou(empty, some) == 0.0
    assert iou(some, empty) == 0.0


def test_iou_one_pixel_object():
    gt = np.zeros((7, 9), dtype=np.uint8)
    gt[3, 4] = 1
    assert iou(gt.copy(), gt) == 1.0
    assert iou(np.roll(gt, 1, axis=1), gt) == 0.0  # off by one pixel: no overlap
    # pred = the pixel plus its right neighbour: I = 1, U = 2.
    assert iou(gt | np.roll(gt, 1, axis=1), gt) == 0.5


def test_iou_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((3, 4)), np.zeros((4, 3)))


# ---------------------------------------------------------------- boundaries


def test_boundary_of_square_is_shifted_ring():
    # A pixel is boundary when it differs from its right, bottom or bottom-right
    # neighbour. For the 2x2 square at rows/cols 1-2 that gives the 3x3 ring at rows/cols
    # 0-2: e.g. (0,0) differs from its bottom-right (1,1); (1,1) is inside but its own
    # neighbours (1,2), (2,1), (2,2) are inside too, so it is not boundary.
    mask = grid(
        """
        ....
        .##.
        .##.
        ....
        """
    )
    expected = grid(
        """
        ###.
        #.#.
        ###.
        ....
        """
    )
    assert np.array_equal(seg_to_boundary(mask), expected)


def test_boundary_of_one_pixel():
    # Lone pixel at (2,2): it differs from its neighbours, and (1,1), (1,2), (2,1) have
    # it as bottom-right, bottom and right neighbour -> a 2x2 block.
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:3, 1:3] = True
    assert np.array_equal(seg_to_boundary(mask), expected)


def test_boundary_of_pixel_in_bottom_right_corner():
    # Pixel (4,4) of a 5x5 mask. The corner pixel itself is never boundary; on the last
    # row only the right neighbour counts -> (4,3) is boundary; on the last column only
    # the bottom one -> (3,4); (3,3) sees it as bottom-right neighbour. 3 pixels.
    mask = np.zeros((5, 5), dtype=bool)
    mask[4, 4] = True
    expected = np.zeros((5, 5), dtype=bool)
    expected[3, 3] = expected[3, 4] = expected[4, 3] = True
    assert np.array_equal(seg_to_boundary(mask), expected)


def test_full_mask_has_no_boundary():
    # Everything equals its neighbours inside; the last row compares only to the right
    # (all equal except the corner, which is cleared), the last column only downwards.
    full = np.ones((4, 6), dtype=bool)
    assert not seg_to_boundary(full).any()
    # So a full prediction has no boundary: precision 1, recall 0 against a square -> F 0,
    # and F 1 against another full mask (both boundaries empty).
    assert boundary_f(full, rect((4, 6), 1, 1, 2, 2)) == 0.0
    assert boundary_f(full, full) == 1.0


def test_disk_matches_skimage_definition():
    # disk(1): x^2 + y^2 <= 1 is the cross. disk(2): rows y = -2..2 hold
    # |x| <= 0, 1, 2, 1, 0 -> 1 + 3 + 5 + 3 + 1 = 13 ones.
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert disk(2).dtype == np.uint8
    assert disk(8).shape == (17, 17)
    assert int(disk(8).sum()) == sum(
        1 for y in range(-8, 9) for x in range(-8, 9) if x * x + y * y <= 64
    )


def test_boundary_tolerance():
    # DAVIS 480p: sqrt(480^2 + 854^2) = 979.65..., * 0.008 = 7.84 -> ceil = 8 pixels.
    assert boundary_tolerance_px((480, 854)) == 8
    # 6x6: diagonal 8.49 * 0.008 = 0.07 -> 1 pixel. A tolerance >= 1 is taken as pixels.
    assert boundary_tolerance_px((6, 6)) == 1
    assert boundary_tolerance_px((480, 854), bound_th=3) == 3


# ---------------------------------------------------------------- F (boundary measure)

# gt: 2x2 square at rows/cols 1-2 of a 6x6 image; its boundary is the 3x3 ring
# R_gt = rows 0-2 x cols 0-2 minus (1,1), 8 pixels (see test above). A tolerance of
# 1 pixel means disk(1), the cross: a pixel matches if it or a 4-neighbour is on the
# other boundary.
SQUARE_GT = rect((6, 6), 1, 1, 2, 2)


def test_boundary_f_square_shifted_by_one_is_perfect():
    # The pred ring is R_gt shifted right by 1: every pred pixel has (y, x-1) on R_gt and
    # every gt pixel has (y, x+1) on the pred ring -> P = R = 1 -> F = 1 (but J = 2/6).
    pred = rect((6, 6), 1, 2, 2, 2)
    assert boundary_f(pred, SQUARE_GT) == 1.0
    assert iou(pred, SQUARE_GT) == pytest.approx(2 / 6)


def test_boundary_f_square_shifted_by_two():
    # pred square at cols 3-4 -> ring rows 0-2 x cols 2-4 minus (1,3):
    #   (0,2) (0,3) (0,4) (1,2) (1,4) (2,2) (2,3) (2,4)
    # on R_gt or next to it: (0,2), (1,2), (2,2) are on R_gt; (0,3) and (2,3) touch
    # (0,2) and (2,2); (0,4), (1,4), (2,4) are 2 away -> precision 5/8.
    # Symmetrically (0,0), (1,0), (2,0) of R_gt are 2 away from the pred ring -> recall 5/8.
    # F = 2 * (5/8)^2 / (5/4) = 5/8.
    pred = rect((6, 6), 1, 3, 2, 2)
    assert boundary_f(pred, SQUARE_GT) == pytest.approx(5 / 8)
    # With 2 pixels of tolerance (disk(2)) every pixel is within 2 -> F = 1.
    assert boundary_f(pred, SQUARE_GT, bound_th=2) == 1.0


def test_boundary_f_empty_cases():
    empty = np.zeros((6, 6), dtype=bool)
    assert boundary_f(empty, empty) == 1.0  # both boundaries empty: P = R = 1
    assert boundary_f(empty, SQUARE_GT) == 0.0  # P = 1, R = 0
    assert boundary_f(SQUARE_GT, empty) == 0.0  # P = 0, R = 1


def test_boundary_f_one_pixel_object():
    # gt pixel (2,2) -> boundary block rows/cols 1-2. pred pixel (2,4) -> block rows 1-2,
    # cols 3-4. With the cross: pred (1,3), (2,3) touch (1,2), (2,2); (1,4), (2,4) are 2
    # away -> P = 1/2; symmetrically R = 1/2 -> F = 1/2.
    gt = np.zeros((6, 6), dtype=bool)
    gt[2, 2] = True
    pred = np.zeros((6, 6), dtype=bool)
    pred[2, 4] = True
    assert boundary_f(pred, gt) == pytest.approx(0.5)
    assert boundary_f(gt, gt) == 1.0


def test_boundary_f_void_clears_pixels_first():
    # Void over cols 3-5 turns the 2x5 pred (cols 1-5) into the gt square. Without void,
    # the pred ring's right side (col 5) is 3 pixels from R_gt, so F < 1.
    pred = rect((6, 6), 1, 1, 2, 5)
    void = np.zeros((6, 6), dtype=bool)
    void[:, 3:] = True
    assert boundary_f(pred, SQUARE_GT) < 1.0
    assert boundary_f(pred, SQUARE_GT, void) == 1.0


def _reference_boundary(mask: np.ndarray) -> set[tuple[int, int]]:
    """Boundary pixels by the documented rule, one pixel at a time."""
    h, w = mask.shape

    def value(y: int, x: int) -> bool:
        return bool(mask[y, x]) if y < h and x < w else False

    pixels = set()
    for y in range(h):
        for x in range(w):
            if (y, x) == (h - 1, w - 1):
                continue
            if y == h - 1:
                neighbours = [(y, x + 1)]
            elif x == w - 1:
                neighbours = [(y + 1, x)]
            else:
                neighbours = [(y, x + 1), (y + 1, x), (y + 1, x + 1)]
            if any(value(ny, nx) != value(y, x) for ny, nx in neighbours):
                pixels.add((y, x))
    return pixels


def _reference_boundary_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """F with matches decided by Euclidean distance <= radius (what a disk dilation does)."""
    pred_b, gt_b = _reference_boundary(pred), _reference_boundary(gt)
    if not pred_b and not gt_b:
        return 1.0
    if not pred_b or not gt_b:
        return 0.0

    def matched(points, others):
        return sum(
            any((y - v) ** 2 + (x - u) ** 2 <= radius**2 for v, u in others) for y, x in points
        )

    precision = matched(pred_b, gt_b) / len(pred_b)
    recall = matched(gt_b, pred_b) / len(gt_b)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_f_agrees_with_brute_force_on_random_masks():
    rng = np.random.default_rng(1234)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        if trial % 2:
            pred = rng.random((h, w)) < rng.random()
            gt = rng.random((h, w)) < rng.random()
        else:
            pred = rect((h, w), *(int(v) for v in rng.integers(0, 8, size=4)))
            gt = rect((h, w), *(int(v) for v in rng.integers(0, 8, size=4)))
        radius = int(rng.integers(1, 4))
        assert seg_to_boundary(pred).sum() == len(_reference_boundary(pred))
        assert boundary_f(pred, gt, bound_th=radius) == pytest.approx(
            _reference_boundary_f(pred, gt, radius), abs=1e-12
        ), (trial, pred.astype(int), gt.astype(int), radius)


# ---------------------------------------------------------------- Mean / Recall / Decay


def test_statistics_eight_frames():
    # values 0.9 .. 0.2: mean = (0.9 + 0.2) / 2 = 0.55; recall counts 0.9, 0.8, 0.7, 0.6
    # (0.5 is not > 0.5) -> 4/8.
    # Bins: e = round(linspace(1, 8, 5) + 1e-10) - 1 = round(1, 2.75, 4.5, 6.25, 8) - 1
    #       = (0, 2, 4, 5, 7); first bin values[0..2], last bin values[5..7]
    # decay = mean(0.9, 0.8, 0.7) - mean(0.4, 0.3, 0.2) = 0.8 - 0.3 = 0.5
    # (np.array_split would give mean(0.9, 0.8) - mean(0.3, 0.2) = 0.6: not the toolkit).
    values = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.55)
    assert recall == 0.5
    assert decay == pytest.approx(0.5)


@pytest.mark.parametrize(
    "values, expected_decay",
    [
        # n = 1: every edge is 0 -> both bins are values[0] -> decay 0.
        ([0.7], 0.0),
        # n = 2: linspace(1, 2, 5) = 1, 1.25, 1.5, 1.75, 2 -> e = (0, 0, 1, 1, 1)
        #        first = values[0], last = values[1] -> 0.9 - 0.1.
        ([0.9, 0.1], 0.8),
        # n = 3: linspace = 1, 1.5, 2, 2.5, 3 -> e = (0, 1, 1, 2, 2)
        #        first = values[0..1], last = values[2] -> 0.5 - 0.0.
        ([1.0, 0.0, 0.0], 0.5),
        # n = 4: linspace = 1, 1.75, 2.5, 3.25, 4 -> e = (0, 1, 2, 2, 3)
        #        first = values[0..1], last = values[2..3] -> 0.5 - 0.25.
        ([1.0, 0.0, 0.5, 0.0], 0.25),
    ],
)
def test_statistics_decay_short_sequences(values, expected_decay):
    assert db_statistics(np.array(values))[2] == pytest.approx(expected_decay)


def test_statistics_ignore_nan_in_mean_and_decay_but_not_in_recall():
    # Mean over the 6 numbers: (0.8 + 0.6 + 0.4 + 0.2) / 6 = 1/3.
    # Recall: NaN > 0.5 is False, so 2 hits (0.8, 0.6) out of 8 values = 0.25.
    # Decay: first bin (nan, 0.8, 0.6) -> 0.7; last bin (nan, 0, 0) -> 0 -> 0.7.
    values = np.array([np.nan, 0.8, 0.6, 0.4, 0.2, np.nan, 0.0, 0.0])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(1 / 3)
    assert recall == 0.25
    assert decay == pytest.approx(0.7)


def test_statistics_of_nothing_are_nan():
    assert all(math.isnan(v) for v in db_statistics(np.array([])))


# ---------------------------------------------------------------- one sequence


def _three_object_sequence():
    """T = 6 frames of 12x16, three objects; returns (gt, result)."""
    shape = (12, 16)
    gt = np.zeros((6, *shape), dtype=np.uint8)
    res = np.zeros_like(gt)
    for t in range(6):
        gt[t][rect(shape, 1, t, 3, 3)] = 1  # object 1: 3x3 square moving right
        gt[t][rect(shape, 6, 2, 4, 4)] = 2  # object 2: still 4x4 square
        if t < 3:
            gt[t][rect(shape, 6, 12, 1, 1)] = 3  # object 3: one pixel, gone from frame 3 on
        res[t][rect(shape, 1, t, 3, 3)] = 1  # object 1 exact
        res[t][rect(shape, 6, 3, 4, 4)] = 2  # object 2 shifted right by 1
        # object 3 never predicted
    # Frames 0 and 5 are not scored: garbage there (even an unknown id) must not matter.
    res[0][:] = 9
    res[5][:] = 0
    return gt, res


def test_score_sequence_three_objects():
    gt, res = _three_object_sequence()
    scores = score_sequence("toy", gt, res)
    assert [s.name for s in scores] == ["toy_1", "toy_2", "toy_3"]
    one, two, three = scores
    # Scored frames are 1..4.
    assert len(one.j_per_frame) == len(one.f_per_frame) == 4
    # Object 1 exact: J = F = 1 everywhere; decay 0.
    assert (one.j_mean, one.j_recall, one.j_decay) == (1.0, 1.0, 0.0)
    assert (one.f_mean, one.f_recall, one.f_decay) == (1.0, 1.0, 0.0)
    # Object 2 shifted by one: I = 4 * 3 = 12, U = 4 * 5 = 20 -> J = 0.6 each frame.
    # The 12x16 frame gives a 1-pixel tolerance and the boundary shifts by exactly 1 -> F = 1.
    assert two.j_per_frame.tolist() == pytest.approx([0.6] * 4)
    assert (two.j_recall, two.j_decay) == (1.0, pytest.approx(0.0))
    assert two.f_per_frame.tolist() == [1.0] * 4
    # Object 3 (one pixel) present in gt frames 1, 2 and absent in 3, 4; never predicted:
    # J = F = (0, 0, 1, 1) (a miss, then both empty). mean 0.5, recall 0.5,
    # decay (n = 4: bins values[0..1], values[2..3]) = 0 - 1 = -1.
    assert three.j_per_frame.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert three.f_per_frame.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert (three.j_mean, three.j_recall, three.j_decay) == (0.5, 0.5, -1.0)


def test_score_sequence_rejects_unknown_object_id_in_scored_frame():
    gt, res = _three_object_sequence()
    res[2][0, 0] = 4
    with pytest.raises(PredictionError, match=r"toy frame 00002 .*object id 4"):
        score_sequence("toy", gt, res, frame_names=[f"{t:05d}" for t in range(6)])


def test_score_sequence_needs_three_frames_and_equal_shapes():
    gt, res = _three_object_sequence()
    with pytest.raises(ValueError, match="at least 3"):
        score_sequence("short", gt[:2], res[:2])
    with pytest.raises(PredictionError, match="shape"):
        score_sequence("toy", gt, res[:, :, :-1])
