"""docs/method.md 3.6 and 4: the order and contents of the decoder calls, and the empty-mask fallbacks.

The real engine runs; a recording wrapper around ``decode_batch`` keeps every call's arguments
and outputs, and can force a call's output to an empty mask.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from persam import PerSAM, PerSAMF
from persam.masks import mask_box
from sam_core import Decoded


class Recorder:
    """Wraps ``engine.decode_batch`` (segment decodes its prompt sets through it; one set per
    call here) and records each call as the one prompt set it holds, with that set's output
    (full-size logits included, upsampled for the record)."""

    def __init__(self, engine, force_empty=()):
        self.engine = engine
        self.decode_batch = engine.decode_batch
        self.calls = []
        self.force_empty = set(force_empty)

    def __call__(self, embedding, points=None, labels=None, boxes=None, mask_input=None, multimask=True,
                 attn_sim=None, target_embedding=None):
        out = self.decode_batch(embedding, points, labels, boxes, mask_input, multimask, attn_sim,
                                target_embedding)
        assert len(out.low_res_logits) == 1  # one concept: one prompt set per call
        if len(self.calls) in self.force_empty:
            out = Decoded(None, out.scores, torch.full_like(out.low_res_logits, -10.0))
        low = out.low_res_logits[0]
        self.calls.append(dict(points=np.asarray(points)[0], labels=np.asarray(labels)[0],
                               box=None if boxes is None else np.asarray(boxes)[0],
                               mask_input=None if mask_input is None
                               else torch.as_tensor(mask_input).clone().reshape(1, 256, 256),
                               multimask=multimask, attn_sim=attn_sim, target_embedding=target_embedding,
                               out=Decoded(self.engine.upsample(embedding, low), out.scores[0], low)))
        return out


@pytest.fixture(scope="module")
def image_and_mask():
    rng = np.random.default_rng(0)
    image = (rng.random((180, 240, 3)) * 255).astype(np.uint8)
    image[40:120, 60:160] = (220, 40, 40)
    mask = np.zeros((180, 240), bool)
    mask[40:120, 60:160] = True
    return image, mask


def recorded(persam, force_empty=()):
    recorder = Recorder(persam.engine, force_empty)
    persam.engine.decode_batch = recorder
    return recorder


def upsampled_mask(persam, embedding, low_res):
    return (persam.engine.upsample(embedding, low_res) > 0).numpy()


def test_persam_cascade_calls(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAM(small_sam)
    concept = persam.learn(image, mask)
    recorder = recorded(persam)
    result = persam.segment(image, concept)
    _, embedding = persam.embed(image)
    first, second, third = recorder.calls
    # Step 1: positive + negative point, single mask, both hooks.
    assert first["labels"].tolist() == [1, 0] and first["multimask"] is False
    assert first["attn_sim"] is not None and first["target_embedding"] is not None
    assert first["box"] is None and first["mask_input"] is None
    torch.testing.assert_close(first["target_embedding"].reshape(-1), concept.target_embedding)
    # Step 2: same points, step 1's logits as mask input, multimask, hooks off.
    np.testing.assert_array_equal(second["points"], first["points"])
    assert second["multimask"] and second["attn_sim"] is None and second["target_embedding"] is None
    assert second["box"] is None
    assert torch.equal(second["mask_input"], first["out"].low_res_logits[0:1])
    best2 = int(torch.argmax(second["out"].scores))
    # Step 3: the box of step 2's best mask and its logits.
    expected_box = mask_box(upsampled_mask(persam, embedding, second["out"].low_res_logits[best2]))
    np.testing.assert_array_equal(third["box"], expected_box)
    assert torch.equal(third["mask_input"], second["out"].low_res_logits[best2: best2 + 1])
    best3 = int(torch.argmax(third["out"].scores))
    np.testing.assert_array_equal(result.mask, upsampled_mask(persam, embedding,
                                                              third["out"].low_res_logits[best3]))
    assert result.score == pytest.approx(float(third["out"].scores[best3]))
    assert result.mask.shape == image.shape[:2]


def test_persam_f_cascade_calls(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAMF(small_sam, fit_steps=20)
    concept = persam.learn(image, mask)
    weights = concept.mask_weights
    assert weights.shape == (3,) and float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    recorder = recorded(persam)
    result = persam.segment(image, concept)
    first, second, third = recorder.calls
    assert first["labels"].tolist() == [1] and first["multimask"] and first["attn_sim"] is None
    high = first["out"].high_res_logits
    weighted_mask = ((high * weights[:, None, None]).sum(0) > 0).numpy()
    np.testing.assert_array_equal(second["box"], mask_box(weighted_mask))
    expected_input = (first["out"].low_res_logits * weights[:, None, None]).sum(0)
    torch.testing.assert_close(second["mask_input"].reshape(256, 256), expected_input)
    _, embedding = persam.embed(image)
    best2 = int(torch.argmax(second["out"].scores))
    np.testing.assert_array_equal(
        third["box"], mask_box(upsampled_mask(persam, embedding, second["out"].low_res_logits[best2])))
    best3 = int(torch.argmax(third["out"].scores))
    np.testing.assert_array_equal(result.mask, upsampled_mask(persam, embedding,
                                                              third["out"].low_res_logits[best3]))


def test_empty_second_step_falls_back_to_first(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAM(small_sam)
    concept = persam.learn(image, mask)
    recorder = recorded(persam, force_empty={1})
    result = persam.segment(image, concept)
    assert len(recorder.calls) == 2  # the cascade stopped: no box from an empty mask
    _, embedding = persam.embed(image)
    first_mask = upsampled_mask(persam, embedding, recorder.calls[0]["out"].low_res_logits[0])
    assert first_mask.any()  # this fixture's first step is not empty: the fallback is exercised
    np.testing.assert_array_equal(result.mask, first_mask)
    assert result.score == pytest.approx(float(recorder.calls[0]["out"].scores[0]))


def test_all_empty_gives_empty_mask_with_zero_score(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAM(small_sam)
    concept = persam.learn(image, mask)
    recorded(persam, force_empty={0, 1})
    result = persam.segment(image, concept)
    assert result.mask.shape == image.shape[:2] and not result.mask.any() and result.score == 0.0


def test_persam_f_empty_weighted_mask(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAMF(small_sam, fit_steps=5)
    concept = persam.learn(image, mask)
    recorder = recorded(persam, force_empty={0})
    result = persam.segment(image, concept)
    assert len(recorder.calls) == 1
    assert not result.mask.any() and result.score == 0.0


def test_persam_f_empty_second_step_returns_weighted_mask(small_sam, image_and_mask):
    image, mask = image_and_mask
    persam = PerSAMF(small_sam, fit_steps=5)
    concept = persam.learn(image, mask)
    recorder = recorded(persam, force_empty={1})
    result = persam.segment(image, concept)
    assert len(recorder.calls) == 2
    high = recorder.calls[0]["out"].high_res_logits
    expected = ((high * concept.mask_weights[:, None, None]).sum(0) > 0).numpy()
    np.testing.assert_array_equal(result.mask, expected)
