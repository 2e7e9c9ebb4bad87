"""``find`` (docs/method.md 11): candidates, batched decoding, scoring, suppression, presence.

The logic tests use a stub engine whose features are a function of colour (red squares are the
object, see find_stub.py); the decoder tests use the real decoder of a seeded random vit_t.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from find_stub import BLUE, DARK_RED, PURPLE, RED, STUB_IOU, StubEngine, canvas, paint
from persam import DEFAULT_THRESHOLD, Calibration, Concept, Detection, Instance, PerSAM
from persam.find import (CANDIDATE_CHUNK, candidate_prompts, detect, distinct_candidates, find_instances,
                         grid_candidates, make_detection, resolve_threshold, suppress)
from persam.prior import similarity_map

THRESHOLD = 0.85  # between a red square (0.9 x 1.0) and a purple one (0.9 x 0.868)
SQUARES = [(20, 24, 59, 63), (140, 32, 179, 71), (60, 160, 107, 203)]  # inclusive (x0, y0, x1, y1)


@pytest.fixture(scope="module")
def stub():
    persam = PerSAM(StubEngine())
    reference = paint(canvas(), (100, 100, 139, 139))
    mask = np.zeros(reference.shape[:2], bool)
    mask[100:140, 100:140] = True
    return persam, persam.learn(reference, mask)


def image_with(boxes, colour=RED):
    image = canvas()
    for box in boxes:
        paint(image, box, colour)
    return image


@pytest.mark.parametrize("count", [0, 1, 3])
def test_finds_exactly_the_red_squares(stub, count):
    persam, concept = stub
    image = image_with(SQUARES[:count])
    detection = persam.find(image, concept, threshold=THRESHOLD)
    unit_sim = (similarity_map(persam.embed(image)[1], concept.target_feature) + 1) / 2
    assert len(detection.instances) == count
    assert detection.present == (count > 0)
    assert sorted(tuple(i.box.tolist()) for i in detection.instances) == sorted(SQUARES[:count])
    for instance in detection.instances:
        x0, y0, x1, y1 = instance.box
        assert instance.area == (x1 - x0 + 1) * (y1 - y0 + 1)
        # mean of (S + 1) / 2 over the square (lower near its edges: S is interpolated)
        assert instance.similarity == pytest.approx(float(unit_sim[y0: y1 + 1, x0: x1 + 1].mean()), abs=1e-6)
        assert 0.95 < instance.similarity < 1.0
        assert instance.iou_score == pytest.approx(STUB_IOU)
        assert instance.score == pytest.approx(instance.iou_score * instance.similarity)
        assert instance.points.shape == (2, 2) and instance.labels.tolist() == [1, 0]
        assert instance.mask[int(instance.points[0, 1]), int(instance.points[0, 0])]
    scores = [i.score for i in detection.instances]
    assert scores == sorted(scores, reverse=True)
    assert detection.score == (scores[0] if scores else 0.0)


def test_all_candidates_go_through_the_decoder_in_one_call_per_step(stub):
    persam, concept = stub
    engine = persam.engine
    engine.decode_calls.clear()
    persam.find(image_with(SQUARES), concept, threshold=THRESHOLD)
    assert engine.decode_calls == [3, 3, 3]


def test_no_red_is_absent(stub):
    persam, concept = stub
    # A purple square is a candidate (similar colour) but scores below the threshold.
    detection = persam.find(image_with(SQUARES[:1], PURPLE), concept, threshold=THRESHOLD)
    assert not detection.present and detection.instances == []
    low = persam.find(image_with(SQUARES[:1], PURPLE), concept, threshold=0.0)
    assert len(low.instances) == 1 and 0.7 < low.score < THRESHOLD
    assert detection.score == low.score  # an absent image still says how near it came
    assert not persam.find(canvas(), concept, threshold=0.0).present  # nothing above the floor
    assert detection.label_map().shape == (256, 256) and not detection.label_map().any()


def test_touching_squares_stay_two_instances(stub):
    persam, concept = stub
    image = paint(paint(canvas(), (40, 40, 87, 87), RED), (88, 40, 135, 87), DARK_RED)
    detection = persam.find(image, concept, threshold=THRESHOLD)
    assert sorted(tuple(i.box.tolist()) for i in detection.instances) == [(40, 40, 87, 87), (88, 40, 135, 87)]
    labels = detection.label_map()
    assert labels.dtype == np.uint8 and sorted(np.unique(labels).tolist()) == [0, 1, 2]
    for index, instance in enumerate(detection.instances, start=1):
        np.testing.assert_array_equal(labels == index, instance.mask)


def test_max_instances_keeps_the_best(stub):
    persam, concept = stub
    image = paint(image_with(SQUARES[:2]), SQUARES[2], DARK_RED)
    detection = persam.find(image, concept, threshold=THRESHOLD, max_instances=1)
    every = persam.find(image, concept, threshold=THRESHOLD)
    assert len(detection.instances) == 1 and len(every.instances) == 3
    assert detection.instances[0].box.tolist() == every.instances[0].box.tolist()
    assert detection.score == every.score


def test_persam_f_concepts_work(stub):
    persam, concept = stub
    concept_f = Concept(method="persam-f", target_embedding=concept.target_embedding,
                        target_feature=concept.target_feature, model_type=concept.model_type,
                        fingerprint=concept.fingerprint, mask_weights=torch.tensor([0.2, 0.3, 0.5]))
    persam.engine.decode_calls.clear()
    detection = persam.find(image_with(SQUARES), concept_f, threshold=THRESHOLD)
    assert sorted(tuple(i.box.tolist()) for i in detection.instances) == sorted(SQUARES)
    for instance in detection.instances:
        assert instance.points.shape == (1, 2) and instance.labels.tolist() == [1]
        assert instance.iou_score == pytest.approx(STUB_IOU)  # step 3's best mask
    assert persam.engine.decode_calls == [3, 3, 3]


@contextmanager
def recorded_decoder(engine):
    """Wraps ``engine.decode_batch`` on the instance: yields a list that receives, per call, the
    prompt points, whether a mask input was given (refinement steps) and the low-res logits."""
    calls = []
    original = engine.decode_batch

    def decode_batch(embedding, points, labels, boxes=None, mask_input=None, *args, **kwargs):
        out = original(embedding, points, labels, boxes, mask_input, *args, **kwargs)
        calls.append({"points": np.array(points), "refine": mask_input is not None,
                      "low_res": out.low_res_logits.detach().clone()})
        return out

    engine.decode_batch = decode_batch
    try:
        yield calls
    finally:
        del engine.decode_batch


def dotted_square(image, x0, y0, cells, colour=RED):
    """A square of ``cells`` x ``cells`` grid cells (4 pixels each on the stub's 256x256 images)
    with one blue pixel in every cell of an odd row or column of the square: the fully coloured
    cells are separate local maxima of equal similarity (candidates in row-major order), while
    the coloured pixels stay one 4-connected region, the stub's mask for each of them."""
    paint(image, (x0, y0, x0 + 4 * cells - 1, y0 + 4 * cells - 1), colour)
    for i in range(cells):
        for j in range(cells):
            if i % 2 or j % 2:
                image[y0 + 4 * i + 1, x0 + 4 * j + 1] = BLUE
    return image


def stub_concept(concept, method):
    if method == "persam":
        return concept
    return Concept(method="persam-f", target_embedding=concept.target_embedding,
                   target_feature=concept.target_feature, model_type=concept.model_type,
                   fingerprint=concept.fingerprint, mask_weights=torch.tensor([0.2, 0.3, 0.5]))


def find_both_ways(persam, image, concept):
    """(detection, stats, prompt sets per decoder call) with covered candidates skipped, then the
    same for every candidate decoded (``skip_covered=False``)."""
    _, embedding = persam.embed(image)
    results = []
    for skip_covered in (True, False):
        stats = {}
        with recorded_decoder(persam.engine) as calls:
            instances = find_instances(persam.engine, embedding, concept, 30, stats=stats, skip_covered=skip_covered)
        detection = make_detection(instances, THRESHOLD, 10, embedding.original_size)
        results.append((detection, stats, [len(call["points"]) for call in calls]))
    return results


def assert_same_detection(new, old, min_iou=1.0, score_tolerance=0.0):
    assert (new.present, len(new.instances)) == (old.present, len(old.instances))
    assert new.score == pytest.approx(old.score, abs=score_tolerance)
    for a, b in zip(new.instances, old.instances):
        iou = np.count_nonzero(a.mask & b.mask) / max(np.count_nonzero(a.mask | b.mask), 1)
        assert iou >= min_iou, iou
        assert a.score == pytest.approx(b.score, abs=score_tolerance)
        np.testing.assert_array_equal(a.points, b.points)


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_candidates_inside_a_kept_first_mask_are_not_decoded(stub, method):
    persam, concept = stub
    concept = stub_concept(concept, method)
    image = dotted_square(canvas(), 20, 20, 7)  # 16 candidates, all on one red region
    (new, stats, calls), (old, old_stats, old_calls) = find_both_ways(persam, image, concept)
    # Round 1 decodes the 8 strongest; its one kept mask covers the other 8, which are skipped.
    assert stats == {"candidates": 16, "decoded": CANDIDATE_CHUNK, "refined": 1}
    assert calls == [CANDIDATE_CHUNK, 1, 1]
    assert old_stats == {"candidates": 16, "decoded": 16, "refined": 1} and old_calls == [16, 1, 1]
    assert len(new.instances) == 1 and new.instances[0].box.tolist() == [20, 20, 47, 47]
    assert_same_detection(new, old)


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_far_apart_candidates_are_both_decoded_and_kept(stub, method):
    persam, concept = stub
    concept = stub_concept(concept, method)
    # The dark red square is weaker than every red cell: it comes after the first round, outside
    # the red region's mask, so it is decoded in a second round and kept.
    image = paint(dotted_square(canvas(), 20, 20, 7), (180, 180, 219, 219), DARK_RED)
    (new, stats, calls), (old, _, old_calls) = find_both_ways(persam, image, concept)
    assert stats == {"candidates": 17, "decoded": CANDIDATE_CHUNK + 1, "refined": 2}
    assert calls == [CANDIDATE_CHUNK, 1, 2, 2] and old_calls == [17, 2, 2]
    assert sorted(i.box.tolist() for i in new.instances) == [[20, 20, 47, 47], [180, 180, 219, 219]]
    assert_same_detection(new, old)


def test_find_many_encodes_once(stub):
    persam, concept = stub
    persam.cache.clear()
    calls = []
    original = persam.engine.encode
    persam.engine.encode = lambda image: calls.append(1) or original(image)
    try:
        results = persam.find_many(image_with(SQUARES[:2]), [concept, concept], threshold=THRESHOLD)
    finally:
        del persam.engine.encode
    assert len(calls) == 1
    assert [len(d.instances) for d in results] == [2, 2]


def test_to_dict_is_json_ready(stub):
    persam, concept = stub
    detection = persam.find(image_with(SQUARES[:2]), concept, threshold=THRESHOLD)
    data = json.loads(json.dumps(detection.to_dict()))
    assert data["present"] is True and data["score"] == pytest.approx(detection.score)
    assert [row["box"] for row in data["instances"]] == [i.box.tolist() for i in detection.instances]
    assert set(data["instances"][0]) == {"score", "iou_score", "similarity", "box", "area"}


# -- pure pieces ---------------------------------------------------------------------------
def square_mask(box, size=32):
    mask = np.zeros((size, size), bool)
    x0, y0, x1, y1 = box
    mask[y0: y1 + 1, x0: x1 + 1] = True
    return mask


def instance(box, score):
    mask = square_mask(box)
    return Instance(mask=mask, score=score, iou_score=score, similarity=1.0, box=np.array(box),
                    points=np.zeros((1, 2)), labels=np.ones(1, int))


def test_suppression_rule():
    best = instance((0, 0, 9, 9), 0.9)            # area 100
    duplicate = instance((1, 1, 10, 10), 0.8)     # 81 in common: > 0.5 * 100
    touching = instance((10, 0, 19, 9), 0.7)      # shares no pixel
    half = instance((5, 20, 14, 29), 0.6)         # area 100, 50 in common with the next
    other_half = instance((10, 20, 19, 29), 0.65)
    empty = Instance(mask=np.zeros((32, 32), bool), score=0.95, iou_score=0.95, similarity=1.0,
                     box=np.zeros(4, int), points=np.zeros((1, 2)), labels=np.ones(1, int))
    kept = suppress([half, duplicate, best, touching, empty, other_half])
    # exactly 0.5 of the smaller area is allowed ("exceeds" drops)
    assert kept == [best, touching, other_half, half]


def test_threshold_and_order():
    items = [instance((0, 0, 3, 3), 0.4), instance((10, 10, 13, 13), 0.7), instance((20, 20, 23, 23), 0.5)]
    detection = make_detection(items, 0.5, 10, (32, 32))
    assert [i.score for i in detection.instances] == [0.7, 0.5] and detection.present
    assert detection.threshold == 0.5 and detection.score == 0.7
    absent = make_detection(items, 0.71, 10, (32, 32))
    assert absent.present is False and absent.instances == [] and absent.score == 0.7  # the near miss
    assert make_detection([], 0.5, 10, (32, 32)).score == 0.0  # no candidate at all
    assert [i.score for i in make_detection(items, 0.0, 2, (32, 32)).instances] == [0.7, 0.5]


def test_grid_candidates_local_maxima_plateaus_floor_and_padding():
    grid = torch.zeros(64, 64)
    grid[10:12, 10:12] = 0.9      # a 2x2 plateau: one candidate, at its first cell
    grid[30, 40] = 0.95
    grid[30, 41] = 0.94           # next to a stronger cell: not a maximum
    grid[50, 5] = 0.3             # a maximum below the floor (0.5 of the range above the mean)
    grid[62, 10] = 0.99           # in the padding of a 1024x960 (h x w)... row 62 is padding for h=960
    cells = grid_candidates(grid, (960, 1024), max_candidates=10)
    assert cells == [(30, 40), (10, 10)]
    assert grid_candidates(grid, (960, 1024), max_candidates=1) == [(30, 40)]
    assert grid_candidates(torch.full((64, 64), 0.1), (1024, 1024), 10) == []  # below the absolute floor
    equal = torch.zeros(64, 64)
    equal[5, 20] = equal[5, 7] = 0.8  # equal strengths: row-major order
    assert grid_candidates(equal, (1024, 1024), 10) == [(5, 7), (5, 20)]


def test_distinct_candidates_drops_duplicate_first_masks():
    low = torch.full((4, 256, 256), -5.0)
    low[0, 0:10, 0:10] = 5    # 100 px
    low[1, 2:10, 2:10] = 5    # inside the first: duplicate
    low[2, 100:110, 0:10] = 5
    low[3, 200:210, 0:10] = 5  # in the padding of a 1024x600 (h x w) image? no: rows < 150 only
    alive = distinct_candidates(low, (600, 1024))
    assert alive.tolist() == [True, False, True, True]


def test_threshold_resolution():
    concept = Concept(method="persam", target_embedding=torch.ones(256), target_feature=torch.ones(256) / 16,
                      model_type="vit_t", fingerprint="x")
    assert resolve_threshold(concept, None) == DEFAULT_THRESHOLD
    concept.calibration = Calibration(threshold=0.42, n_pos=3, n_neg=5, auroc=0.9, precision=1.0, recall=0.67)
    assert resolve_threshold(concept, None) == 0.42
    assert resolve_threshold(concept, 0.7) == 0.7
    assert Detection(False, 0.0, [], 0.5, (3, 4)).label_map().shape == (3, 4)


# -- the real decoder --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(vit_t_checkpoint):
    from sam_fixtures import make_image

    from persam import build_sam

    persam = PerSAM(build_sam("auto", vit_t_checkpoint))
    reference = make_image(200, 240, seed=3)
    mask = np.zeros(reference.shape[:2], bool)
    mask[60:140, 80:170] = True
    return persam, persam.learn(reference, mask), make_image(180, 220, seed=4)


def test_decode_batch_matches_one_by_one(real):
    persam, concept, image = real
    engine = persam.engine
    _, embedding = persam.embed(image)
    sim = similarity_map(embedding, concept.target_feature)
    from persam.prior import attention_guidance

    points = np.array([[[30, 40], [200, 170]], [[100, 90], [5, 5]], [[150, 20], [60, 160]]], float)
    labels = np.array([[1, 0], [1, 0], [1, 1]])
    boxes = np.array([[10, 20, 90, 100], [50, 40, 160, 150], [100, 0, 219, 60]])
    mask_input = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    hooks = dict(attn_sim=attention_guidance(sim), target_embedding=concept.target_embedding.reshape(1, 1, -1))
    for kwargs in (dict(multimask=False, **hooks), dict(boxes=boxes, mask_input=mask_input, multimask=True)):
        batched = engine.decode_batch(embedding, points, labels, **kwargs)
        for row in range(3):
            single = engine.decode(embedding, points[row], labels[row],
                                   box=None if kwargs.get("boxes") is None else boxes[row],
                                   mask_input=None if kwargs.get("mask_input") is None else mask_input[row],
                                   multimask=kwargs["multimask"], attn_sim=kwargs.get("attn_sim"),
                                   target_embedding=kwargs.get("target_embedding"), high_res=False)
            torch.testing.assert_close(batched.low_res_logits[row], single.low_res_logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(batched.scores[row], single.scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_one_candidate_is_decoded_as_segment_does(real, method):
    """The batched cascade on segment's own prompt gives segment's mask and score."""
    persam, concept, image = real
    if method == "persam-f":
        concept = Concept(method="persam-f", target_embedding=concept.target_embedding,
                          target_feature=concept.target_feature, model_type=concept.model_type,
                          fingerprint=concept.fingerprint, mask_weights=torch.tensor([0.2, 0.5, 0.3]))
    _, embedding = persam.embed(image)
    segmentation = persam.segment_embedding(embedding, concept)
    assert not segmentation.empty
    # Two copies of the same prompt: the second is a duplicate and is refined once only.
    points = np.stack([segmentation.points, segmentation.points])
    labels = np.stack([segmentation.labels, segmentation.labels])
    instances = find_instances(persam.engine, embedding, concept, 0, prompts=(points, labels))
    assert len(instances) == 1
    found = instances[0]
    differing = np.count_nonzero(found.mask != segmentation.mask)
    assert differing <= 0.001 * found.mask.size, differing
    assert found.iou_score == pytest.approx(segmentation.score, abs=1e-4)
    sim = similarity_map(embedding, concept.target_feature)
    assert found.similarity == pytest.approx(float(((sim + 1) / 2)[torch.from_numpy(found.mask)].mean()), abs=1e-6)
    assert np.array_equal(found.box, np.array([np.flatnonzero(found.mask.any(0))[0], np.flatnonzero(found.mask.any(1))[0],
                                               np.flatnonzero(found.mask.any(0))[-1], np.flatnonzero(found.mask.any(1))[-1]]))


def test_real_decoder_skips_only_candidates_inside_a_kept_first_mask(real):
    """Random vit_t: the first step decodes fewer prompt sets than there are candidates, every
    skipped candidate's point lies in the first mask of a stronger, kept candidate, and the
    detection is that of decoding every candidate."""
    from sam_core.transforms import resized_shape

    from persam.prior import similarity_grid, upsample_similarity

    persam, concept, image = real
    engine = persam.engine
    _, embedding = persam.embed(image)
    stats = {}
    with recorded_decoder(engine) as calls:
        new = detect(engine, embedding, concept, float("-inf"), stats=stats)
    first_calls = [call for call in calls if not call["refine"]]
    assert all(len(call["points"]) <= CANDIDATE_CHUNK for call in first_calls)
    decoded_points = np.concatenate([call["points"] for call in first_calls])
    first_masks = torch.cat([call["low_res"][:, 0] for call in first_calls]) > 0
    assert len(decoded_points) == stats["decoded"] < stats["candidates"]

    grid = similarity_grid(embedding, concept.target_feature)
    points, _ = candidate_prompts(concept, upsample_similarity(grid, embedding), grid, embedding,
                                  stats["candidates"])
    assert len(points) == stats["candidates"]
    order = {tuple(p.ravel()): row for row, p in enumerate(points)}
    decoded_rows = [order[tuple(p.ravel())] for p in decoded_points]
    assert decoded_rows == sorted(decoded_rows)  # strongest first
    kept_points = next(call["points"] for call in calls if call["refine"])
    kept = [decoded_rows.index(order[tuple(p.ravel())]) for p in kept_points]
    (height, width), (new_h, new_w) = embedding.original_size, resized_shape(embedding.original_size)
    skipped = sorted(set(range(len(points))) - set(decoded_rows))
    assert skipped and min(skipped) >= CANDIDATE_CHUNK
    for row in skipped:
        x, y = points[row, 0]
        pixel = int((y * new_h / height + 0.5) // 4), int((x * new_w / width + 0.5) // 4)
        assert any(first_masks[k][pixel] and decoded_rows[k] < row for k in kept), row

    old = make_detection(find_instances(engine, embedding, concept, stats["candidates"], skip_covered=False),
                         float("-inf"), 10, embedding.original_size)
    assert_same_detection(new, old, min_iou=0.999, score_tolerance=1e-4)


def test_find_on_random_weights_respects_thresholds(real):
    persam, concept, image = real
    high = persam.find(image, concept, threshold=1e9)
    assert not high.present and high.instances == []
    low = persam.find(image, concept, threshold=-1e9, max_instances=5)
    assert low.present and 1 <= len(low.instances) <= 5
    assert high.score == low.score == low.instances[0].score
    for i, first in enumerate(low.instances):
        for second in low.instances[i + 1:]:
            overlap = np.count_nonzero(first.mask & second.mask)
            assert overlap <= 0.5 * min(first.area, second.area)
    assert all(i.points.shape == (2, 2) and i.labels.tolist() == [1, 0] for i in low.instances)


# -- concept files ---------------------------------------------------------------------------
def test_concept_format_1_still_loads_and_uses_the_default_threshold(tmp_path):
    from persam.concept import FORMAT_VERSION

    old = {  # what persam wrote before calibration existed (format 1)
        "format_version": torch.tensor(1), "method": "persam", "target_embedding": torch.ones(256),
        "target_feature": torch.ones(256) / 16, "mask_weights": None, "model_type": "vit_t",
        "fingerprint": "abc", "name": "dog", "num_references": 1,
    }
    torch.save(old, tmp_path / "old.pt")
    concept = Concept.load(tmp_path / "old.pt")
    assert concept.calibration is None and resolve_threshold(concept, None) == DEFAULT_THRESHOLD
    concept.calibration = Calibration(threshold=0.55, n_pos=4, n_neg=9, auroc=0.875, precision=0.8, recall=1.0)
    concept.save(tmp_path / "new.pt")
    assert int(torch.load(tmp_path / "new.pt", weights_only=True)["format_version"]) == FORMAT_VERSION == 2
    again = Concept.load(tmp_path / "new.pt")
    assert again.calibration == concept.calibration and resolve_threshold(again, None) == 0.55


def test_calibrate_on_stub_images(stub):
    persam, concept = stub
    positives = [image_with(SQUARES[:1]), image_with(SQUARES[1:3])]
    negatives = [image_with(SQUARES[:1], PURPLE), canvas()]
    scores_pos = persam.presence_scores(positives, concept)
    scores_neg = persam.presence_scores(negatives, concept)
    assert scores_neg[1] == 0.0 and min(scores_pos) > max(scores_neg)
    calibrated = persam.calibrate(concept, positives, negatives)
    assert calibrated is not concept and concept.calibration is None
    c = calibrated.calibration
    # separable: the lowest positive score is the highest threshold with balanced accuracy 1
    assert c.threshold == pytest.approx(min(scores_pos))
    assert (c.n_pos, c.n_neg, c.auroc, c.precision, c.recall) == (2, 2, 1.0, 1.0, 1.0)
    assert persam.find(negatives[0], calibrated).present is False  # threshold=None: calibrated
    assert all(persam.find(image, calibrated).present for image in positives)


def test_candidate_point_stays_inside_its_cell():
    from sam_core.engine import ImageEmbedding
    from sam_core.transforms import resized_shape

    from persam.find import _cell_span, candidate_point

    assert _cell_span(3, 1024, 256) == (12, 15)      # 4 pixels per cell
    assert _cell_span(3, 1024, 2048) == (96, 127)    # 32 pixels per cell
    assert _cell_span(0, 1024, 32) == (0, 0) and _cell_span(1, 1024, 32) == (0, 0)  # 2 cells per pixel
    assert _cell_span(63, 1024, 32) == (31, 31)
    size = (300, 200)  # (H, W): 1024 x 683 input
    embedding = ImageEmbedding(torch.zeros(1, 256, 64, 64), resized_shape(size), size)
    sim = torch.zeros(size)
    sim[100, 50] = 5.0   # outside the cell asked for
    sim[10, 20] = 1.0
    sim[12, 21] = 1.0    # same value, later in row-major order
    assert _cell_span(2, 1024, 300) == (9, 13) and _cell_span(4, 683, 200) == (19, 22)
    assert candidate_point(sim, (2, 4), embedding) == (20, 10)


def test_find_embedding_accepts_fp16_embeddings(stub):
    from dataclasses import replace

    persam, concept = stub
    _, embedding = persam.embed(image_with(SQUARES))
    half = replace(embedding, features=embedding.features.half())
    boxes = [i.box.tolist() for i in persam.find_embedding(embedding, concept, threshold=THRESHOLD).instances]
    original = persam.engine.decode_batch

    def decode_batch(emb, *args, **kwargs):  # the stub finds its image by the features' identity
        assert emb.features.dtype == torch.float32
        persam.engine.images[id(emb.features)] = persam.engine.images[id(embedding.features)]
        return original(emb, *args, **kwargs)

    persam.engine.decode_batch = decode_batch
    try:
        found = persam.find_many_embedding(half, [concept], threshold=THRESHOLD)[0]
    finally:
        del persam.engine.decode_batch
    assert [i.box.tolist() for i in found.instances] == boxes
