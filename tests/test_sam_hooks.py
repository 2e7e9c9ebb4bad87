"""PerSAM's decoder hooks in sam_core (docs/method.md 2: explicit, optional arguments of the two-way
transformer; with both None the decoder is SAM's, to float rounding).

* hooks off: our prompt encoder gives exactly (torch.equal) the official outputs on the same
  inputs, and our mask decoder the official logits and scores within ``DECODER_TOL`` (it
  computes the same products in another order, see sam_core/transformer.py);
* hooks on (attn_sim = sigmoid of a standardized random map (1, 1, 1, 4096), target_embedding
  (1, 1, 256)), together and each alone: our decoder matches the written-out oracle
  ``reference.hooks.reference_mask_decoder_with_hooks`` (computed from the official weights)
  within ``HOOK_TOL``;
* attn_sim of zeros is not the same as None (the second softmax flattens the attention).

Decoder weights come from the reduced-ViT checkpoint loaded by both sides; image features
from the official encoder of that checkpoint (the decoder does not depend on the encoder type).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import reference_mask_decoder_with_hooks
from sam_fixtures import (make_hooks, max_abs, official_apply_boxes, official_apply_coords,
                          official_features, official_model, our_embedding, our_engine)

HOOK_TOL = 2e-5  # ours vs the written-out oracle, max abs (logits and IoU scores)
# Ours vs the official decoder without hooks, max abs: float rounding of reassociated
# products (observed up to ~5e-6 on logits of magnitude 1-10).
DECODER_TOL = 2e-5

NAME, HEIGHT, WIDTH = "vit_b_small", 500, 380


@pytest.fixture(scope="module")
def setup():
    official = official_model(NAME)
    ours = our_engine(NAME).sam
    features, _ = official_features(NAME, HEIGHT, WIDTH)
    return official, ours, features


def _prompt_inputs(kind: str):
    """Prompt tensors in the 1024 frame, (B, N, 2) points, (B, N) labels, (B, 4) boxes,
    (B, 1, 256, 256) masks."""
    g = torch.Generator().manual_seed(5)
    points = labels = boxes = masks = None
    if kind in ("points", "points_box_mask"):
        points = torch.tensor([[[300.5, 420.25], [810.0, 130.75]]])
        labels = torch.tensor([[1, 0]], dtype=torch.int)
    if kind in ("box", "points_box_mask"):
        boxes = torch.tensor([[200.0, 300.5, 600.25, 700.0]])
    if kind in ("mask", "points_box_mask"):
        masks = torch.randn(1, 1, 256, 256, generator=g) * 4
    if kind == "batch2":  # two prompt sets against one image embedding
        points = torch.tensor([[[300.0, 420.0]], [[50.0, 990.0]]])
        labels = torch.tensor([[1], [1]], dtype=torch.int)
    return points, labels, boxes, masks


def _encode_prompts(prompt_encoder, kind: str):
    points, labels, boxes, masks = _prompt_inputs(kind)
    with torch.no_grad():
        return prompt_encoder(points=(points, labels) if points is not None else None,
                              boxes=boxes, masks=masks)


KINDS = ["points", "box", "mask", "points_box_mask", "batch2"]


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_encoder_is_bit_identical(setup, kind):
    official, ours, _ = setup
    o_sparse, o_dense = _encode_prompts(official.prompt_encoder, kind)
    sparse, dense = _encode_prompts(ours.prompt_encoder, kind)
    assert torch.equal(sparse, o_sparse)
    assert dense.shape == o_dense.shape
    if "mask" in kind:
        # the mask's last 1x1 convolution runs channels-last (prompt_encoder._downscale_masks):
        # another summation order of 16 terms, so float32 rounding only
        assert dense.is_contiguous(memory_format=torch.channels_last)
        assert max_abs(dense, o_dense) <= 1e-6 * max(1.0, o_dense.abs().max().item())
    else:
        assert torch.equal(dense, o_dense)
    with torch.no_grad():
        assert torch.equal(ours.prompt_encoder.get_dense_pe(), official.prompt_encoder.get_dense_pe())


NO_HOOK_CASES = [("points", True), ("points", False), ("box", False), ("mask", True),
                 ("points_box_mask", True), ("points_box_mask", False), ("batch2", True)]


@pytest.mark.parametrize("kind, multimask", NO_HOOK_CASES,
                         ids=[f"{k}-{'multi' if m else 'single'}" for k, m in NO_HOOK_CASES])
def test_decoder_without_hooks_matches_official(setup, kind, multimask):
    official, ours, features = setup
    sparse, dense = _encode_prompts(official.prompt_encoder, kind)
    with torch.no_grad():
        pe = official.prompt_encoder.get_dense_pe()
        want_masks, want_iou = official.mask_decoder(
            image_embeddings=features, image_pe=pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask)
        got_masks, got_iou = ours.mask_decoder(
            image_embeddings=features, image_pe=pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask,
            attn_sim=None, target_embedding=None)
    assert got_masks.shape == want_masks.shape and got_iou.shape == want_iou.shape
    assert max_abs(got_masks, want_masks) < DECODER_TOL
    assert max_abs(got_iou, want_iou) < DECODER_TOL
    if kind == "points" and multimask:  # default arguments are the same as explicit None
        with torch.no_grad():
            default_masks, _ = ours.mask_decoder(features, pe, sparse, dense, multimask)
        assert torch.equal(default_masks, got_masks)


def _ours_and_oracle(setup, kind, multimask, attn_sim, target):
    official, ours, features = setup
    sparse, dense = _encode_prompts(official.prompt_encoder, kind)
    with torch.no_grad():
        pe = official.prompt_encoder.get_dense_pe()
        got = ours.mask_decoder(features, pe, sparse, dense, multimask,
                                attn_sim=attn_sim, target_embedding=target)
    want = reference_mask_decoder_with_hooks(official, features, pe, sparse, dense, multimask,
                                             attn_sim=attn_sim, target_embedding=target)
    return got, want


HOOK_SETS = {"both": (True, True), "attn_sim_only": (True, False), "target_only": (False, True)}


# (hooks, prompt kind, multimask): every hook set on two prompt kinds; multimask only
# selects outputs after the transformer, so it is varied, not crossed with everything.
HOOK_CASES = [
    ("both", "points", True), ("both", "points_box_mask", False), ("both", "batch2", True),
    ("attn_sim_only", "points", False), ("attn_sim_only", "points_box_mask", True),
    ("target_only", "points", True), ("target_only", "points_box_mask", False),
]


@pytest.mark.parametrize("hooks, kind, multimask", HOOK_CASES,
                         ids=[f"{h}-{k}-{'multi' if m else 'single'}" for h, k, m in HOOK_CASES])
def test_decoder_with_hooks_matches_oracle(setup, hooks, kind, multimask):
    use_sim, use_target = HOOK_SETS[hooks]
    attn_sim, target = make_hooks(seed=21)
    attn_sim = attn_sim if use_sim else None
    target = target if use_target else None
    (got_masks, got_iou), (want_masks, want_iou) = _ours_and_oracle(setup, kind, multimask,
                                                                    attn_sim, target)
    assert max_abs(got_masks, want_masks) < HOOK_TOL
    assert max_abs(got_iou, want_iou) < HOOK_TOL
    # The hooks are not a no-op: without them the logits differ clearly.
    official, _, features = setup
    sparse, dense = _encode_prompts(official.prompt_encoder, kind)
    with torch.no_grad():
        off_masks, _ = official.mask_decoder(features, official.prompt_encoder.get_dense_pe(),
                                             sparse, dense, multimask)
    assert max_abs(got_masks, off_masks) > 1e-2


def test_attn_sim_zeros_is_not_none(setup):
    """softmax(softmax(x) + 0) != softmax(x): the second softmax flattens the attention, so
    zeros must not be treated as "no hook"; a constant A equals zeros (shift invariance)."""
    attn_sim, _ = make_hooks(seed=22)
    zeros = torch.zeros_like(attn_sim)
    (none_masks, none_iou), _ = _ours_and_oracle(setup, "points", False, None, None)
    (zero_masks, zero_iou), (want_masks, want_iou) = _ours_and_oracle(setup, "points", False,
                                                                      zeros, None)
    assert max_abs(zero_masks, none_masks) > 1e-2
    assert max_abs(zero_masks, want_masks) < HOOK_TOL
    assert max_abs(zero_iou, want_iou) < HOOK_TOL
    (const_masks, _), _ = _ours_and_oracle(setup, "points", False, zeros + 0.7, None)
    assert max_abs(const_masks, zero_masks) < 1e-4


def test_hooks_through_the_engine():
    """``SamEngine.decode(..., attn_sim, target_embedding)`` with prompts in original pixels
    vs the oracle fed the official prompt encoding of SAM-scaled coordinates."""
    official = official_model(NAME)
    engine = our_engine(NAME)
    embedding = our_embedding(NAME, HEIGHT, WIDTH)
    attn_sim, target = make_hooks(seed=23)
    points = np.array([[0.3 * WIDTH, 0.6 * HEIGHT + 0.5], [0.9 * WIDTH - 0.25, 0.1 * HEIGHT]])
    labels = np.array([1, 0])
    box = np.array([0.1 * WIDTH, 0.2 * HEIGHT, 0.7 * WIDTH, 0.9 * HEIGHT])
    got = engine.decode(embedding, points, labels, box=box, multimask=False, attn_sim=attn_sim,
                        target_embedding=target)
    coords = torch.as_tensor(official_apply_coords(points, (HEIGHT, WIDTH)), dtype=torch.float)[None]
    box_t = torch.as_tensor(official_apply_boxes(box, (HEIGHT, WIDTH)), dtype=torch.float)[None]
    with torch.no_grad():
        sparse, dense = official.prompt_encoder(
            points=(coords, torch.as_tensor(labels, dtype=torch.int)[None]), boxes=box_t, masks=None)
        pe = official.prompt_encoder.get_dense_pe()
    want_low, want_iou = reference_mask_decoder_with_hooks(
        official, embedding.features, pe, sparse, dense, False, attn_sim=attn_sim,
        target_embedding=target)
    with torch.no_grad():
        want_high = official.postprocess_masks(want_low, embedding.input_size, (HEIGHT, WIDTH))
    assert max_abs(got.low_res_logits, want_low[0]) < HOOK_TOL
    assert max_abs(got.scores, want_iou[0]) < HOOK_TOL
    assert max_abs(got.high_res_logits, want_high[0]) < HOOK_TOL
    plain = engine.decode(embedding, points, labels, box=box, multimask=False)
    assert max_abs(got.low_res_logits, plain.low_res_logits) > 1e-2
