"""Several prompt sets / concepts at once (docs/method.md 5): the engine's batched decode equals decoding
one set at a time, ``segment_many`` equals per-concept ``segment`` plus overlap resolution, and
overlap resolution leaves every result self-consistent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from persam import PerSAM, PerSAMF, Segmentation, build_sam, resolve_overlaps
from sam_core import SamEngine

# Batched matrix products may sum in another order than one-by-one ones: results agree to
# float32 rounding. Logits are compared to this absolute tolerance (they are O(1..10)).
TOLERANCE = 1e-5
LOGIT_TOLERANCE = 1e-4  # full-size logits: the batched low-res maps, bilinearly upsampled


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    from parity import save_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny_vit_b.pth"
    save_random_checkpoint("vit_b", path, seed=3, embed_dim=32, depth=1, num_heads=1,
                           global_attn_indexes=())
    return build_sam("auto", path)


def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 96x128 picture of three coloured shapes on grey noise and the three shapes' masks."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, size=(96, 128, 3), dtype=np.uint8)
    masks = [np.zeros((96, 128), bool) for _ in range(3)]
    masks[0][10:40, 10:50] = True
    masks[1][50:90, 30:70] = True
    masks[2][20:70, 80:120] = True
    for mask, colour in zip(masks, ((230, 30, 30), (30, 220, 40), (40, 60, 240))):
        image[mask] = colour
    return image, masks


def test_decode_batch_equals_one_by_one(sam):
    engine = SamEngine(sam)
    image, _ = scene()
    embedding = engine.encode(image)
    generator = torch.Generator().manual_seed(0)
    points = np.array([[[20, 25], [100, 80]], [[50, 70], [5, 5]], [[100, 40], [30, 20]]])
    labels = np.array([[1, 0], [1, 0], [1, 1]])
    boxes = np.array([[8, 8, 52, 42], [28, 48, 72, 92], [78, 18, 122, 72]])
    mask_input = torch.randn(3, 256, 256, generator=generator)
    attn_sim = torch.rand(3, 1, 1, 4096, generator=generator)
    target = torch.randn(3, 1, 256, generator=generator)
    for kwargs in ({}, {"boxes": boxes}, {"boxes": boxes, "mask_input": mask_input},
                   {"attn_sim": attn_sim, "target_embedding": target}):
        for multimask in (True, False):
            batch = engine.decode_batch(embedding, points, labels, multimask=multimask, **kwargs)
            for row in range(3):
                single = engine.decode(
                    embedding, points[row], labels[row],
                    box=boxes[row] if "boxes" in kwargs else None,
                    mask_input=mask_input[row: row + 1] if "mask_input" in kwargs else None,
                    multimask=multimask,
                    attn_sim=attn_sim[row: row + 1] if "attn_sim" in kwargs else None,
                    target_embedding=target[row: row + 1] if "target_embedding" in kwargs else None)
                torch.testing.assert_close(batch.low_res_logits[row], single.low_res_logits,
                                           rtol=0, atol=TOLERANCE)
                torch.testing.assert_close(batch.scores[row], single.scores, rtol=0, atol=TOLERANCE)
                torch.testing.assert_close(engine.upsample(embedding, batch.low_res_logits[row]),
                                           single.high_res_logits, rtol=0, atol=TOLERANCE)


def assert_same_segmentation(joint: Segmentation, single: Segmentation) -> None:
    np.testing.assert_array_equal(joint.points, single.points)
    np.testing.assert_array_equal(joint.labels, single.labels)
    assert joint.score == pytest.approx(single.score, abs=TOLERANCE)
    torch.testing.assert_close(joint.logits, single.logits, rtol=0, atol=LOGIT_TOLERANCE)
    # Masks agree wherever the logit is not within rounding of the threshold.
    clear = (single.logits.abs() > LOGIT_TOLERANCE).numpy()
    np.testing.assert_array_equal(joint.mask[clear], single.mask[clear])


def test_segment_many_equals_segment_per_concept(sam):
    image, masks = scene()
    persam, persam_f = PerSAM(sam), PerSAMF(sam, fit_steps=5)
    concepts = [persam.learn(image, masks[0]), persam_f.learn(image, masks[1]),
                persam.learn(image, masks[2])]
    _, embedding = persam.embed(image)
    decoder_calls = []
    hook = sam.mask_decoder.register_forward_hook(lambda *_: decoder_calls.append(1))
    try:
        joint = persam.segment_embedding_many(embedding, concepts)
        batched_calls = len(decoder_calls)
        singles = [persam.segment_embedding(embedding, concept) for concept in concepts]
    finally:
        hook.remove()
    # One decoder call per cascade step for all concepts of a method: 3 steps x 2 methods.
    assert batched_calls <= 6 < len(decoder_calls) - batched_calls
    for one_joint, single in zip(joint, singles):
        assert_same_segmentation(one_joint, single)

    many = persam.segment_many(image, concepts)
    resolve_overlaps(singles)
    for one_many, single in zip(many, singles):
        assert_same_segmentation(one_many, single)
        assert one_many.pixels_lost == single.pixels_lost or np.abs(single.logits.numpy()).min() < LOGIT_TOLERANCE


def segmentation(logits: np.ndarray, score: float) -> Segmentation:
    logits = torch.tensor(logits, dtype=torch.float32)
    return Segmentation(mask=(logits > 0).numpy(), score=score, points=np.zeros((1, 2)), labels=np.ones(1),
                        logits=logits, low_res_logits=torch.zeros(256, 256))


def test_resolve_overlaps_keeps_masks_and_logits_consistent():
    first = segmentation([[3.0, 1.0, -1.0, 2.0]], 0.9)
    second = segmentation([[1.0, 2.0, 4.0, -5.0]], 0.8)
    third = segmentation([[-1.0, -1.0, -1.0, -1.0]], 0.1)
    resolve_overlaps([first, second, third])
    # Pixel 0: both claim it, 3 > 1 -> first; pixel 1: 2 > 1 -> second; pixel 2: second only.
    assert first.mask.tolist() == [[True, False, False, True]]
    assert second.mask.tolist() == [[False, True, True, False]]
    assert not third.mask.any()
    for result in (first, second, third):
        np.testing.assert_array_equal((result.logits > 0).numpy(), result.mask)
    # A lost pixel's logit is how far below the winner it was; kept pixels are untouched.
    assert first.logits.tolist() == [[3.0, -1.0, -1.0, 2.0]]
    assert second.logits.tolist() == [[-2.0, 2.0, 4.0, -5.0]]
    assert (first.pixels_lost, second.pixels_lost, third.pixels_lost) == (1, 1, 0)
    # score stays SAM's predicted IoU of the decoded mask.
    assert (first.score, second.score, third.score) == (0.9, 0.8, 0.1)


def test_resolve_overlaps_tie_goes_to_the_earlier_result():
    first, second = segmentation([[2.0]], 0.5), segmentation([[2.0]], 0.5)
    resolve_overlaps([first, second])
    assert first.mask.tolist() == [[True]] and second.mask.tolist() == [[False]]
    assert second.logits.tolist() == [[0.0]] and not (second.logits > 0).any()
