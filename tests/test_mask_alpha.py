"""Cut-out masks (alpha carries the object) and masks with every pixel the object."""
from __future__ import annotations

import numpy as np
import pytest
from persam_files import read_label_map, read_mask
from PIL import Image

from persam.masks import MaskError, check_not_a_photo, load_mask

H, W = 24, 32


def _shape() -> np.ndarray:
    """The object: a filled rectangle away from the borders."""
    shape = np.zeros((H, W), dtype=bool)
    shape[5:18, 8:25] = True
    return shape


def _cutout(rgb: np.ndarray, shape: np.ndarray) -> np.ndarray:
    alpha = np.where(shape, 255, 0).astype(np.uint8)
    return np.dstack([rgb.astype(np.uint8), alpha])


def _save(array: np.ndarray, path, mode: str):
    Image.fromarray(array, mode).save(path)
    return path


def test_cutout_with_white_behind_transparency_is_the_alpha_shape(tmp_path):
    shape = _shape()
    path = _save(_cutout(np.full((H, W, 3), 255), shape), tmp_path / "white.png", "RGBA")
    np.testing.assert_array_equal(read_mask(path), shape)
    np.testing.assert_array_equal(load_mask(path, (H, W)), shape)


def test_cutout_with_black_behind_transparency_is_the_alpha_shape(tmp_path):
    shape = _shape()
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[shape] = (10, 200, 30)
    path = _save(_cutout(rgb, shape), tmp_path / "black.png", "RGBA")
    np.testing.assert_array_equal(read_mask(path), shape)
    np.testing.assert_array_equal(load_mask(path, (H, W)), shape)
    # black everywhere, object included: the alpha still marks the object
    path = _save(_cutout(np.zeros((H, W, 3)), shape), tmp_path / "all_black.png", "RGBA")
    np.testing.assert_array_equal(load_mask(path), shape)


def test_colourful_cutout_is_accepted_and_gives_the_alpha_shape(tmp_path):
    shape = _shape()
    rng = np.random.default_rng(0)
    rgb = np.full((H, W, 3), 255, dtype=np.uint8)
    rgb[shape] = rng.integers(0, 256, size=(int(shape.sum()), 3), dtype=np.uint8)
    array = _cutout(rgb, shape)
    path = _save(array, tmp_path / "colourful.png", "RGBA")
    np.testing.assert_array_equal(load_mask(path, (H, W)), shape)
    # the same colours with an opaque alpha are a photo
    opaque = array.copy()
    opaque[:, :, 3] = 255
    with pytest.raises(MaskError, match="photo"):
        load_mask(_save(opaque, tmp_path / "opaque.png", "RGBA"))
    check_not_a_photo(array, "array")  # the alpha carries the mask: not refused
    with pytest.raises(MaskError):
        check_not_a_photo(opaque, "array")


def test_soft_alpha_edges_count_as_object(tmp_path):
    shape = _shape()
    array = _cutout(np.full((H, W, 3), 255), shape)
    array[4, 8:25, 3] = 1  # a faint antialiased edge above the object
    expected = shape.copy()
    expected[4, 8:25] = True
    np.testing.assert_array_equal(load_mask(_save(array, tmp_path / "soft.png", "RGBA")), expected)


def test_fully_opaque_rgba_keeps_the_rgb_rule(tmp_path):
    shape = _shape()
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[shape] = (255, 0, 0)
    rgb[0, 0] = (0, 0, 7)
    rgb_path = _save(rgb, tmp_path / "rgb.png", "RGB")
    rgba = np.dstack([rgb, np.full((H, W), 255, dtype=np.uint8)])
    rgba_path = _save(rgba, tmp_path / "rgba.png", "RGBA")
    expected = shape.copy()
    expected[0, 0] = True
    np.testing.assert_array_equal(read_mask(rgb_path), expected)
    np.testing.assert_array_equal(read_mask(rgba_path), read_mask(rgb_path))
    np.testing.assert_array_equal(load_mask(rgba_path), load_mask(rgb_path))
    np.testing.assert_array_equal(read_mask(rgba), expected)  # the array, too


def test_la_with_transparency_is_read_by_alpha_and_opaque_la_by_value(tmp_path):
    shape = _shape()
    grey = np.full((H, W), 255, dtype=np.uint8)
    alpha = np.where(shape, 255, 0).astype(np.uint8)
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")]).save(path)
    assert Image.open(path).mode == "LA"
    np.testing.assert_array_equal(read_mask(path), shape)
    np.testing.assert_array_equal(load_mask(path), shape)
    # fully opaque LA: the value band is the mask, as before
    value = np.where(shape, 255, 0).astype(np.uint8)
    opaque = tmp_path / "la_opaque.png"
    Image.merge("LA", [Image.fromarray(value, "L"), Image.fromarray(np.full((H, W), 255, np.uint8), "L")]).save(opaque)
    np.testing.assert_array_equal(read_mask(opaque), shape)


def test_label_maps_ignore_alpha(tmp_path):
    """read_label_map reads the value band of LA images, transparency or not."""
    ids = np.zeros((H, W), dtype=np.uint8)
    ids[2:6, 2:6] = 3
    alpha = np.where(_shape(), 255, 0).astype(np.uint8)
    path = tmp_path / "ids.png"
    Image.merge("LA", [Image.fromarray(ids, "L"), Image.fromarray(alpha, "L")]).save(path)
    np.testing.assert_array_equal(read_label_map(path), ids)


def test_four_channel_arrays(tmp_path):
    shape = _shape()
    array = _cutout(np.full((H, W, 3), 255), shape)
    np.testing.assert_array_equal(read_mask(array), shape)
    np.testing.assert_array_equal(load_mask(array, (H, W)), shape)
    wide = array.astype(np.uint16) * 257  # 16-bit: 65535 is opaque
    np.testing.assert_array_equal(read_mask(wide), shape)
    opaque = array.copy()
    opaque[:, :, 3] = 255
    assert read_mask(opaque).all()  # opaque: the RGB rule, white everywhere


def test_full_mask_is_refused_naming_the_file_unless_allowed(tmp_path):
    path = _save(np.full((H, W), 255, dtype=np.uint8), tmp_path / "everything.png", "L")
    with pytest.raises(MaskError, match="everything.png.*every pixel"):
        load_mask(path)
    assert load_mask(path, allow_full=True).all()
    # an opaque white cut-out background is the same mistake
    white = _save(np.full((H, W, 4), 255, dtype=np.uint8), tmp_path / "white_rgba.png", "RGBA")
    with pytest.raises(MaskError, match="white_rgba.png"):
        load_mask(white)


def test_greyscale_photo_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    photo = rng.integers(1, 256, size=(H, W), dtype=np.uint8)
    path = _save(photo, tmp_path / "grey_photo.png", "L")
    with pytest.raises(MaskError, match="grey_photo.png"):
        load_mask(path, (H, W))
