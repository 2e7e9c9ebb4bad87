"""docs/method.md 3.1-3.4, each step against a direct, written-out computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from persam.prior import (MASK_FILL_VIDEO, EmptyTargetError, attention_guidance, best_and_worst_points,
                          mask_to_feature_grid, max_mean_embedding, mean_embedding, normalized, reference_grid,
                          similarity_map, target_cells)
from sam_core import ImageEmbedding


def direct_grid(mask: np.ndarray, fill: int) -> np.ndarray:
    """docs/method.md 3.1 as the paper's code does it: a 3-channel image, resized as RGB."""
    height, width = mask.shape
    scale = 1024 / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[mask, 0] = fill
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR)).astype(np.float32)
    channel0 = (resized[:, :, 0] - 123.675) / 58.395
    padded = np.zeros((1024, 1024), np.float32)
    padded[:new_h, :new_w] = channel0
    small = F.interpolate(torch.from_numpy(padded)[None, None], size=(64, 64), mode="bilinear",
                          align_corners=False)
    return small[0, 0].numpy() > 0


@pytest.mark.parametrize("shape", [(300, 400), (517, 389), (1282, 1282)])
@pytest.mark.parametrize("fill", [128, MASK_FILL_VIDEO])
def test_feature_grid_matches_rgb_computation(shape, fill):
    rng = np.random.default_rng(shape[0] + fill)
    mask = np.zeros(shape, bool)
    y0, x0 = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
    mask[y0: y0 + shape[0] // 3, x0: x0 + shape[1] // 4] = True
    mask[rng.random(shape) < 0.02] = True  # speckle exercises the bilinear edges
    grid = mask_to_feature_grid(mask, fill).numpy()
    np.testing.assert_array_equal(grid, direct_grid(mask, fill))
    assert grid.any() and not grid.all()


def test_feature_grid_video_fill_is_stricter():
    mask = np.zeros((256, 256), bool)
    mask[100:140, 37:91] = True
    image_cells = mask_to_feature_grid(mask, 128)
    video_cells = mask_to_feature_grid(mask, MASK_FILL_VIDEO)
    # 215 admits more partly covered cells at the boundary (threshold 123.675/215 ~ 58% coverage
    # versus 128 needing ~97%): the video set contains the image set.
    assert bool((video_cells | image_cells).eq(video_cells).all())
    # A mask drawn at 60% intensity-equivalent: a stripe pattern that averages to ~60% coverage
    # after the antialiased resize passes 215 but not 128.
    stripes = np.zeros((4096, 4096), bool)  # 4x downscale: the filter spans ~8 columns
    stripes[:, ::5] = stripes[:, 1::5] = stripes[:, 2::5] = True  # 60% of columns
    assert mask_to_feature_grid(stripes, MASK_FILL_VIDEO).all()
    assert not mask_to_feature_grid(stripes, 128).any()


def test_feature_grid_of_tiny_mask_is_empty():
    mask = np.zeros((1000, 1000), bool)
    mask[500, 500] = True
    assert not mask_to_feature_grid(mask).any()


def test_target_embeddings_match_numpy():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(1, 256, 64, 64)).astype(np.float32))
    grid = torch.from_numpy(rng.random((64, 64)) < 0.05)
    cells = target_cells(features, grid)
    expected_cells = features[0].numpy().transpose(1, 2, 0)[grid.numpy()]
    np.testing.assert_array_equal(cells.numpy(), expected_cells)
    np.testing.assert_allclose(mean_embedding(cells).numpy(), expected_cells.mean(0), atol=1e-6)
    np.testing.assert_allclose(max_mean_embedding(cells).numpy(),
                               (expected_cells.max(0) + expected_cells.mean(0)) / 2, atol=1e-6)
    vector = mean_embedding(cells)
    np.testing.assert_allclose(normalized(vector).numpy(),
                               vector.numpy() / np.linalg.norm(vector.numpy()), rtol=1e-6)


def make_embedding(rng, original_size=(300, 400)) -> ImageEmbedding:
    features = torch.from_numpy(rng.normal(size=(1, 256, 64, 64)).astype(np.float32))
    scale = 1024 / max(original_size)
    input_size = (int(original_size[0] * scale + 0.5), int(original_size[1] * scale + 0.5))
    return ImageEmbedding(features, input_size, original_size)


def test_similarity_map_matches_direct_computation():
    rng = np.random.default_rng(1)
    embedding = make_embedding(rng)
    target = normalized(torch.from_numpy(rng.normal(size=256).astype(np.float32)))
    feats = embedding.features[0].numpy().reshape(256, -1)
    cosine = (target.numpy() @ (feats / np.linalg.norm(feats, axis=0, keepdims=True))).reshape(1, 1, 64, 64)
    up = F.interpolate(torch.from_numpy(cosine), size=(256, 256), mode="bilinear", align_corners=False)
    up = F.interpolate(up, size=(1024, 1024), mode="bilinear", align_corners=False)
    up = up[..., : embedding.input_size[0], : embedding.input_size[1]]
    expected = F.interpolate(up, size=embedding.original_size, mode="bilinear", align_corners=False)[0, 0]
    sim = similarity_map(embedding, target)
    assert sim.shape == (300, 400)
    np.testing.assert_allclose(sim.numpy(), expected.numpy(), atol=1e-5)
    # Several targets at once give the same maps.
    both = similarity_map(embedding, torch.stack([target, -target]))
    np.testing.assert_allclose(both[0].numpy(), sim.numpy(), atol=1e-6)
    np.testing.assert_allclose(both[1].numpy(), -sim.numpy(), atol=1e-6)


def test_points_are_argmax_and_argmin_in_xy():
    sim = torch.zeros(5, 7)
    sim[3, 6] = 2.0
    sim[1, 2] = -1.0
    assert best_and_worst_points(sim) == ((6, 3), (2, 1))


def test_point_ties_go_to_first_in_row_major_order():
    sim = torch.zeros(4, 6)
    sim[2, 1] = sim[1, 4] = sim[3, 0] = 5.0  # row-major first: (row 1, col 4)
    sim[0, 5] = sim[2, 2] = -5.0  # first: (row 0, col 5)
    assert best_and_worst_points(sim) == ((4, 1), (5, 0))
    flat = torch.ones(3, 3)
    assert best_and_worst_points(flat) == ((0, 0), (0, 0))


def test_attention_guidance_matches_formula():
    rng = np.random.default_rng(2)
    sim = torch.from_numpy(rng.normal(size=(300, 400)).astype(np.float32))
    values = sim.numpy().astype(np.float64)
    standardized = (values - values.mean()) / values.std(ddof=1)  # unbiased std
    small = F.interpolate(torch.from_numpy(standardized.astype(np.float32))[None, None], size=(64, 64),
                          mode="bilinear", align_corners=False)
    expected = 1 / (1 + np.exp(-small.numpy().astype(np.float64)))  # sigmoid after the resize
    guidance = attention_guidance(sim)
    assert guidance.shape == (1, 1, 1, 4096)
    np.testing.assert_allclose(guidance.numpy().reshape(64, 64), expected.reshape(64, 64), atol=1e-5)


def test_reference_grid_names_the_empty_and_the_scattered_mask():
    with pytest.raises(EmptyTargetError, match=r"^ref\.png: mask is empty$"):
        reference_grid(np.zeros((64, 80), bool), "ref.png")
    # 4096 object pixels, one in every 8x8 block: many pixels, yet no cell of the grid is target
    scattered = np.zeros((512, 512), bool)
    scattered[::8, ::8] = True
    assert not mask_to_feature_grid(scattered).any()
    with pytest.raises(EmptyTargetError, match=r"thin or scattered .*\(4096 object pixels, .* ~8x8 pixels here\)"):
        reference_grid(scattered, "ref.png")
    solid = np.zeros((512, 512), bool)
    solid[100:200, 100:200] = True
    assert reference_grid(solid).sum() > 0
