"""Parity of sam_core with the official SAM / MobileSAM code (issue #2).

The same seeded random state_dict is saved once to a file in the official layout
(``reference.save_random_checkpoint``) and loaded by both the official model
(``reference.load_official_checkpoint``) and ours (``sam_core.build_sam("auto", path)`` and
with an explicit model type / config). Both then see the same uint8 image:

* ours: ``SamEngine.encode(image)`` / ``SamEngine.decode(...)`` with prompts in original-image
  pixels;
* official: ``Sam.preprocess`` of the image resized as ``ResizeLongestSide.apply_image`` does
  (PIL bilinear), ``image_encoder``, prompt coordinates scaled as ``apply_coords`` /
  ``apply_boxes`` (written out in ``sam_fixtures``), ``prompt_encoder`` + ``mask_decoder`` +
  ``Sam.postprocess_masks``.

Configurations: the full-size vit_t (MobileSAM TinyViT), a vit_b-shaped reduced ViT and a
second reduced ViT with other head counts (both pad the 64x64 grid to 70x70 for window 14).
Images are non-square in both orientations so that the crop in postprocessing matters.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

import sam_core
from sam_core.tiny_vit import TinyViT
from sam_core.transforms import preprocess_image
from sam_fixtures import (CONFIGS, checkpoint, max_abs, official_decode, official_features,
                          official_input, official_model, official_preprocess_shape,
                          our_embedding, our_engine, sample_image, vit_config)

# Tolerances (max abs difference, fp32 on CPU). Encoder outputs are O(1) (LayerNorm2d neck),
# decoder logits O(1-10).
EMBEDDING_TOL = 1e-4
LOGITS_TOL = 1e-3  # low-res (256x256) and high-res (original size) mask logits
SCORE_TOL = 1e-4  # predicted IoU
BATCH_TOL = 1e-5  # encode_batch vs one-by-one encode, same model

# (config, H, W): each config on a non-square image; vit_b_small on both orientations.
CASES = [("vit_t", 300, 400), ("vit_b_small", 500, 380), ("vit_b_small", 300, 400),
         ("vit_pad", 500, 380)]
CASE_IDS = [f"{n}-{h}x{w}" for n, h, w in CASES]

PROMPT_KINDS = ["points", "box", "mask", "box_points_mask"]


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def case(request):
    return request.param


def _prompts(kind: str, height: int, width: int):
    """Prompts in original-image pixels (x, y), off the pixel grid on purpose."""
    points = labels = box = None
    if kind in ("points", "box_points_mask"):
        points = np.array([[0.31 * width + 0.4, 0.46 * height], [0.78 * width, 0.21 * height + 0.7]])
        labels = np.array([1, 0])
    if kind in ("box", "box_points_mask"):
        box = np.array([0.18 * width, 0.22 * height + 0.25, 0.66 * width - 0.5, 0.83 * height])
    return points, labels, box


# ------------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------------


def test_preprocess_matches_official(case):
    name, height, width = case
    image = sample_image(height, width)
    ours = preprocess_image(np.array(image))
    theirs, input_size = official_input(official_model(name), image)
    assert input_size == official_preprocess_shape(height, width)
    assert ours.shape == theirs.shape == (1, 3, 1024, 1024)
    assert max_abs(ours, theirs) <= 1e-6
    # The padding is zeros, bottom/right only.
    assert torch.all(ours[..., input_size[0]:, :] == 0) and torch.all(ours[..., input_size[1]:] == 0)


def test_image_embedding_matches_official(case):
    name, height, width = case
    embedding = our_embedding(name, height, width)
    theirs, input_size = official_features(name, height, width)
    assert embedding.features.shape == (1, 256, 64, 64)
    assert embedding.input_size == input_size
    assert embedding.original_size == (height, width)
    assert theirs.std().item() > 0.1  # random weights give real, varying features
    assert max_abs(embedding.features, theirs) < EMBEDDING_TOL


def test_auto_loading_infers_the_config(case):
    name, _, _ = case
    sam = our_engine(name).sam
    if name == "vit_t":
        assert sam.model_type == "vit_t"
        assert isinstance(sam.image_encoder, TinyViT)
    else:
        assert sam.model_type == "custom"
        assert sam_core.infer_config(sam.state_dict()) == ("custom", vit_config(name))


@lru_cache(maxsize=None)
def explicit_engine(name: str) -> sam_core.SamEngine:
    """Our model loaded with an explicit type (and, for the reduced ViTs, config)."""
    path = checkpoint(name)
    if name == "vit_t":
        return sam_core.SamEngine(sam_core.build_sam("vit_t", path))
    return sam_core.SamEngine(sam_core.build_sam("vit_b", path, config=vit_config(name)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_explicit_model_type_loads_the_same_weights(name):
    explicit = explicit_engine(name).sam
    auto = our_engine(name).sam
    assert type(explicit.image_encoder) is type(auto.image_encoder)
    explicit_state, auto_state = explicit.state_dict(), auto.state_dict()
    assert explicit_state.keys() == auto_state.keys()
    assert all(torch.equal(explicit_state[k], auto_state[k]) for k in auto_state)


@pytest.mark.parametrize("name, height, width", [c for c in CASES if c[0] != "vit_t"],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] != "vit_t"])
def test_explicit_model_type_gives_the_same_embedding(name, height, width):
    # (vit_t's explicit build is encoded in test_encode_batch_equals_one_by_one_vit_t.)
    embedding = explicit_engine(name).encode(np.array(sample_image(height, width)))
    theirs, input_size = official_features(name, height, width)
    assert embedding.input_size == input_size
    assert max_abs(embedding.features, theirs) < EMBEDDING_TOL


# ------------------------------------------------------------------------------------------
# Decoder through the engine (prompts in original-image pixels)
# ------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _previous_low_res(case):
    """Low-res logits of a previous decode (points, multimask), each side its own, for use as
    mask input; the best mask by the official IoU score (same index on both sides)."""
    name, height, width = case
    features, input_size = official_features(name, height, width)
    points, labels, _ = _prompts("points", height, width)
    ours = our_engine(name).decode(our_embedding(name, height, width), points, labels,
                                   multimask=True, high_res=False)
    _, iou, low = official_decode(official_model(name), features, input_size, (height, width),
                                  points=points, labels=labels, multimask=True)
    best = int(iou[0].argmax())
    return ours.low_res_logits[best][None], low[0, best][None]  # (1, 256, 256) each


@lru_cache(maxsize=None)
def _decode_both(case, kind: str, multimask: bool):
    name, height, width = case
    features, input_size = official_features(name, height, width)
    points, labels, box = _prompts(kind, height, width)
    ours_mask = theirs_mask = None
    if kind in ("mask", "box_points_mask"):
        ours_mask, theirs_mask = _previous_low_res(case)
    ours = our_engine(name).decode(our_embedding(name, height, width), points, labels, box=box,
                                   mask_input=ours_mask, multimask=multimask)
    theirs = official_decode(official_model(name), features, input_size, (height, width),
                             points=points, labels=labels, box=box, mask_input=theirs_mask,
                             multimask=multimask)
    return ours, theirs


# Every prompt kind x multimask on/off on vit_t (landscape image); every kind once on the
# portrait image; the combined prompt with multimask on/off on the other cases. (The decoder
# is the same for all encoder types; the cases differ in weights and image orientation.)
DECODE_CASES = [(CASES[0], kind, mm) for kind in PROMPT_KINDS for mm in (True, False)]
DECODE_CASES += [(CASES[1], "points", True), (CASES[1], "box", False), (CASES[1], "mask", True),
                 (CASES[1], "box_points_mask", False)]
DECODE_CASES += [(c, "box_points_mask", mm) for c in CASES[2:] for mm in (True, False)]
DECODE_IDS = [f"{n}-{h}x{w}-{kind}-{'multi' if mm else 'single'}"
              for (n, h, w), kind, mm in DECODE_CASES]


@pytest.mark.parametrize("case, kind, multimask", DECODE_CASES, ids=DECODE_IDS)
def test_decode_matches_official(case, kind, multimask):
    _, height, width = case
    ours, (high, iou, low) = _decode_both(case, kind, multimask)
    k = 3 if multimask else 1
    assert ours.low_res_logits.shape == (k, 256, 256)
    assert ours.scores.shape == (k,)
    assert ours.high_res_logits.shape == (k, height, width)
    assert low.std().item() > 0.05  # non-degenerate reference
    assert max_abs(ours.low_res_logits, low[0]) < LOGITS_TOL
    assert max_abs(ours.high_res_logits, high[0]) < LOGITS_TOL
    assert max_abs(ours.scores, iou[0]) < SCORE_TOL
    # The thresholded masks agree except where the logit is within the tolerance of 0.
    disagree = (ours.high_res_logits > 0) != (high[0] > 0)
    assert bool((high[0][disagree].abs() < LOGITS_TOL).all())


def test_prompt_kinds_give_different_masks():
    """Guard against a decoder that ignores its prompts (every parity test would still pass
    if both sides ignored them in the same way)."""
    case = CASES[0]
    lows = {kind: _decode_both(case, kind, True)[0].low_res_logits for kind in PROMPT_KINDS}
    for i, a in enumerate(PROMPT_KINDS):
        for b in PROMPT_KINDS[i + 1:]:
            assert max_abs(lows[a], lows[b]) > 0.1, (a, b)


@pytest.mark.parametrize("name, height, width", CASES[:2], ids=CASE_IDS[:2])
def test_decode_without_high_res_and_upsample(name, height, width):
    engine = our_engine(name)
    embedding = our_embedding(name, height, width)
    points, labels, box = _prompts("box_points_mask", height, width)
    full = engine.decode(embedding, points, labels, box=box)
    low_only = engine.decode(embedding, points, labels, box=box, high_res=False)
    assert low_only.high_res_logits is None
    assert torch.equal(low_only.low_res_logits, full.low_res_logits)
    assert torch.equal(engine.upsample(embedding, low_only.low_res_logits), full.high_res_logits)
    # One (256, 256) map: same values (interpolation kernels may vectorize a single channel
    # differently, so not necessarily bit for bit).
    single = engine.upsample(embedding, low_only.low_res_logits[1])
    assert single.shape == (height, width)
    assert max_abs(single, full.high_res_logits[1]) < 1e-5


# ------------------------------------------------------------------------------------------
# Batched encoding
# ------------------------------------------------------------------------------------------


def _check_batch(engine: sam_core.SamEngine, name: str, sizes):
    images = [np.array(sample_image(h, w)) for h, w in sizes]
    batch = engine.encode_batch(images)
    assert len(batch) == len(images)
    for (h, w), emb in zip(sizes, batch):
        single = our_embedding(name, h, w)
        assert emb.features.shape == (1, 256, 64, 64)
        assert emb.original_size == (h, w) == single.original_size
        assert emb.input_size == official_preprocess_shape(h, w) == single.input_size
        assert max_abs(emb.features, single.features) < BATCH_TOL
    # Each image got its own features.
    assert max_abs(batch[0].features, batch[1].features) > 0.1


def test_encode_batch_equals_one_by_one_reduced_vit():
    assert our_engine("vit_b_small").encode_batch([]) == []
    _check_batch(our_engine("vit_b_small"), "vit_b_small", [(500, 380), (300, 400), (120, 90)])


def test_encode_batch_equals_one_by_one_vit_t():
    # Batch through the explicitly typed build ("vit_t"), one by one through the "auto" build:
    # also checks the explicit build's embeddings (within BATCH_TOL of the auto build's, which
    # match the official ones within EMBEDDING_TOL).
    _check_batch(explicit_engine("vit_t"), "vit_t", [(300, 400), (500, 380)])


def test_configs_cover_windows_with_padding():
    # Both reduced ViTs pad the 64x64 grid (window 14 -> 70x70) and mix windowed/global blocks.
    for name in ("vit_b_small", "vit_pad"):
        cfg = vit_config(name)
        assert 64 % cfg.window_size != 0
        assert 0 < len(cfg.global_attn_indexes) < cfg.depth
    assert vit_config("vit_b_small").num_heads != vit_config("vit_pad").num_heads
    assert set(CONFIGS) == {"vit_t", "vit_b_small", "vit_pad"}


def test_decoder_layout_copy_follows_the_features():
    """The engine keeps a channels-last copy of the last decoded features: reused for the same
    tensor, redone for another tensor or after an in-place change, never stale."""
    name, height, width = CASES[0]
    engine = our_engine(name)
    embedding = our_embedding(name, height, width)
    points, labels, _ = _prompts("points", height, width)
    first = engine.decode(embedding, points, labels, high_res=False).low_res_logits
    rows = engine._channels_last(embedding.features)
    assert engine._channels_last(embedding.features) is rows
    assert torch.equal(rows, embedding.features)
    changed = embedding.features.clone()
    other = sam_core.ImageEmbedding(changed, embedding.input_size, embedding.original_size)
    assert torch.equal(engine.decode(other, points, labels, high_res=False).low_res_logits, first)
    changed.mul_(-1.0)  # same tensor, new contents: the cached copy must not be used
    flipped = engine.decode(other, points, labels, high_res=False).low_res_logits
    assert max_abs(flipped, first) > 0.1
    assert torch.equal(engine._channels_last(changed), changed)


def test_decode_under_inference_mode():
    """Inference tensors have no version counter: they are decoded without the layout cache."""
    name, height, width = CASES[0]
    engine = our_engine(name)
    embedding = our_embedding(name, height, width)
    points, labels, _ = _prompts("points", height, width)
    expected = engine.decode(embedding, points, labels, high_res=False).low_res_logits
    with torch.inference_mode():
        features = embedding.features.clone()
        inside = sam_core.ImageEmbedding(features, embedding.input_size, embedding.original_size)
        first = engine.decode(inside, points, labels, high_res=False).low_res_logits
        features.mul_(-1.0)
        flipped = engine.decode(inside, points, labels, high_res=False).low_res_logits
    assert torch.equal(first, expected)
    assert max_abs(flipped, expected) > 0.1
