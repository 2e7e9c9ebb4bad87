"""sam_core pre/post-processing and image reading against direct computations (docs/method.md 2, 9).

Expected values are computed here from the definitions (SAM's ``ResizeLongestSide`` written
out, PIL bilinear, ``F.interpolate``), never taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sam_core import ImageReadError, load_image
from sam_core.transforms import (normalize_and_pad, postprocess_masks, preprocess_image,
                                 resize_uint8, resized_shape, scale_boxes, scale_coords)
from sam_fixtures import (PIXEL_MEAN, PIXEL_STD, make_image, official_apply_boxes,
                          official_apply_coords, official_preprocess_shape, our_engine)

# ------------------------------------------------------------------------------------------
# Resize
# ------------------------------------------------------------------------------------------

# (H, W) -> (h, w) worked out by hand: scale = 1024 / max(H, W), int(dim * scale + 0.5).
KNOWN_SHAPES = {
    (1024, 1024): (1024, 1024),
    (300, 400): (768, 1024),  # 300 * 2.56 = 768
    (500, 380): (1024, 778),  # 380 * 2.048 = 778.24
    (480, 640): (768, 1024),
    (1080, 1920): (576, 1024),
    (100, 50): (1024, 512),  # upscaling
    (3, 2048): (2, 1024),  # 1.5 rounds up (int(2.0)), as in SAM
    (5, 2048): (3, 1024),  # 2.5 rounds up: int(x + 0.5), not round() (banker's rounding gives 2)
    (2048, 7): (1024, 4),  # 3.5 -> 4
    (333, 1000): (341, 1024),  # 340.992
    (1000, 333): (1024, 341),
    (683, 1024): (683, 1024),
    (1, 1): (1024, 1024),
}


@pytest.mark.parametrize("size", list(KNOWN_SHAPES), ids=[f"{h}x{w}" for h, w in KNOWN_SHAPES])
def test_resized_shape_known_values(size):
    assert resized_shape(size) == KNOWN_SHAPES[size]
    assert official_preprocess_shape(*size) == KNOWN_SHAPES[size]


def test_resized_shape_matches_sam_formula_everywhere():
    # Every height 1..2500 against a few widths, incl. ones where dim * scale is k + 0.5.
    for width in (1, 7, 380, 400, 1023, 1024, 1025, 2048, 2500):
        for height in range(1, 2501):
            assert resized_shape((height, width)) == official_preprocess_shape(height, width), (height, width)


def test_resized_shape_other_long_side():
    assert resized_shape((300, 400), long_side=512) == (384, 512)
    assert resized_shape((5, 2048), long_side=2048) == (5, 2048)


@pytest.mark.parametrize("size", [(300, 400), (500, 380), (1024, 1024), (97, 61), (2000, 1500)])
def test_resize_uint8_is_pil_bilinear(size):
    image = make_image(*size, seed=sum(size))
    new_h, new_w = official_preprocess_shape(*size)
    want = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    got = resize_uint8(image)
    assert got.dtype == np.uint8 and got.shape == (new_h, new_w, 3)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("size", [(300, 400), (500, 380), (2000, 1500), (61, 97)])
def test_single_channel_resize_equals_channel_0_of_rgb(size):
    """persam resizes reference masks as one channel ("L"); the paper's code resizes a
    3-channel image. PIL bilinear treats channels independently, so they agree exactly."""
    rng = np.random.default_rng(size[0])
    binary = (make_image(*size, seed=3)[..., 0] > 128).astype(np.uint8) * 255
    noisy = rng.integers(0, 256, size, dtype=np.uint8)
    for mask in (binary, noisy):
        rgb = np.repeat(mask[..., None], 3, axis=2)
        rgb[..., 1] = 255 - mask  # other channels differ: no cross-talk allowed
        new_h, new_w = official_preprocess_shape(*size)
        single = np.array(Image.fromarray(mask, mode="L").resize((new_w, new_h), Image.BILINEAR))
        three = np.array(Image.fromarray(rgb, mode="RGB").resize((new_w, new_h), Image.BILINEAR))
        assert np.array_equal(single, three[..., 0])
        assert np.array_equal(resize_uint8(mask), single)


# ------------------------------------------------------------------------------------------
# Normalize / pad / postprocess
# ------------------------------------------------------------------------------------------


def test_preprocess_is_normalize_and_pad():
    image = make_image(300, 400, seed=4)
    got = preprocess_image(image)
    resized = np.array(Image.fromarray(image).resize((1024, 768), Image.BILINEAR)).astype(np.float32)
    want = np.zeros((3, 1024, 1024), np.float32)
    for c in range(3):
        want[c, :768, :1024] = (resized[..., c] - np.float32(PIXEL_MEAN[c])) / np.float32(PIXEL_STD[c])
    assert got.shape == (1, 3, 1024, 1024) and got.dtype == torch.float32
    assert np.abs(got[0].numpy() - want).max() < 1e-5
    assert torch.all(got[:, :, 768:, :] == 0)


def test_normalize_and_pad_batch():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    got = normalize_and_pad(x, size=8)
    assert got.shape == (2, 3, 8, 8)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    assert torch.allclose(got[:, :, :5, :7], (x - mean) / std)
    assert torch.all(got[:, :, 5:, :] == 0) and torch.all(got[:, :, :, 7:] == 0)


@pytest.mark.parametrize("original", [(300, 400), (500, 380), (1024, 1024), (33, 700)])
def test_postprocess_masks_written_out(original):
    g = torch.Generator().manual_seed(original[0])
    low = torch.randn(2, 3, 256, 256, generator=g) * 5
    input_size = official_preprocess_shape(*original)
    up = F.interpolate(low, size=(1024, 1024), mode="bilinear", align_corners=False)
    up = up[:, :, : input_size[0], : input_size[1]]
    want = F.interpolate(up, size=original, mode="bilinear", align_corners=False)
    got = postprocess_masks(low, input_size, original)
    assert got.shape == (2, 3, *original)
    assert torch.equal(got, want)


def test_postprocess_crops_the_padding():
    """A low-res map that is +1 inside the image area and -1000 in the padding: after the
    crop nothing of the padding may reach the output (away from the last row/column, where
    bilinear mixes the two)."""
    original, input_size = (300, 400), (768, 1024)
    low = torch.full((1, 1, 256, 256), -1000.0)
    low[..., :192, :] = 1.0  # 768 / 4 = 192 rows of image
    got = postprocess_masks(low, input_size, original)
    assert got.shape == (1, 1, 300, 400)
    assert torch.all(got[..., :-2, :] == 1.0)
    # Without the crop the padding would be squeezed into the bottom quarter.
    uncropped = F.interpolate(F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False),
                              original, mode="bilinear", align_corners=False)
    assert (uncropped < 0).float().mean() > 0.2


# ------------------------------------------------------------------------------------------
# Prompt coordinates
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("original", [(300, 400), (500, 380), (1080, 1920), (5, 2048)])
def test_scale_coords_and_boxes(original):
    rng = np.random.default_rng(1)
    h, w = original
    coords = rng.random((7, 2)) * [w, h]
    boxes = np.sort(rng.random((3, 2, 2)) * [w, h], axis=1).reshape(3, 4)
    before = coords.copy()
    got = scale_coords(coords, original)
    assert np.array_equal(coords, before)  # input untouched
    assert got.dtype == np.float64
    assert np.array_equal(got, official_apply_coords(coords, original))
    new_h, new_w = official_preprocess_shape(h, w)
    assert np.allclose(got, coords * [new_w / w, new_h / h])
    assert np.array_equal(scale_boxes(boxes, original), official_apply_boxes(boxes, original))
    # Batched leading dims and integer input.
    ints = np.array([[[0, 0], [w, h]]])
    assert np.allclose(scale_coords(ints, original), [[[0, 0], [new_w, new_h]]])
    assert scale_boxes(np.array([0, 0, w, h]), original).shape == (1, 4)


# ------------------------------------------------------------------------------------------
# Image reading
# ------------------------------------------------------------------------------------------


def _assert_rgb(array: np.ndarray, shape) -> None:
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8 and array.shape == (*shape, 3)
    assert array.flags["C_CONTIGUOUS"]


def test_load_rgb_png(tmp_path):
    image = make_image(40, 60, seed=1)
    path = tmp_path / "rgb.png"
    Image.fromarray(image).save(path)
    got = load_image(path)
    _assert_rgb(got, (40, 60))
    assert np.array_equal(got, image)
    assert np.array_equal(load_image(str(path)), image)


def test_load_grayscale(tmp_path):
    gray = make_image(40, 60, seed=2)[..., 1]
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    got = load_image(path)
    _assert_rgb(got, (40, 60))
    assert all(np.array_equal(got[..., c], gray) for c in range(3))


def test_load_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([make_image(40, 60, seed=3),
                           np.random.default_rng(0).integers(0, 256, (40, 60, 1), dtype=np.uint8)], axis=2)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    got = load_image(path)
    _assert_rgb(got, (40, 60))
    assert np.array_equal(got, rgba[..., :3])


def test_load_16_bit_png(tmp_path):
    values = np.random.default_rng(4).integers(0, 65536, (40, 60), dtype=np.uint16)
    values[0, :4] = [0, 255, 256, 65535]
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # mode I;16
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    got = load_image(path)
    _assert_rgb(got, (40, 60))
    want = (values // 256).astype(np.uint8)  # the top 8 of 16 bits
    assert all(np.array_equal(got[..., c], want) for c in range(3))
    assert list(got[0, :4, 0]) == [0, 0, 1, 255]


def test_load_palette(tmp_path):
    rng = np.random.default_rng(5)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.flatten().tolist())
    path = tmp_path / "palette.png"
    image.save(path)
    got = load_image(path)
    _assert_rgb(got, (40, 60))
    assert np.array_equal(got, palette[index])


def test_load_exif_rotated_jpeg_is_upright(tmp_path):
    # Stored 40 x 60 with the left half white; EXIF orientation 6 = "rotate 90 deg clockwise
    # to display", so upright it is 60 x 40 with the top half white.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = 255
    stored[:, :, 2] = np.linspace(0, 250, 60).astype(np.uint8)[None, :]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.getexif().get(0x0112) == 6
        decoded = np.array(raw.convert("RGB"))  # as stored, without applying EXIF
    got = load_image(path)
    _assert_rgb(got, (60, 40))
    assert np.array_equal(got, np.rot90(decoded, k=-1))  # clockwise
    assert got[:25, :, 0].mean() > 240 and got[35:, :, 0].mean() < 15


def test_load_pil_image_and_arrays():
    image = make_image(20, 30, seed=6)
    assert np.array_equal(load_image(Image.fromarray(image)), image)
    assert np.array_equal(load_image(image), image)
    assert np.array_equal(load_image(image[..., 0])[..., 2], image[..., 0])
    rgba = np.concatenate([image, np.zeros((20, 30, 1), np.uint8)], axis=2)
    assert np.array_equal(load_image(rgba), image)
    deep = image.astype(np.uint16) * 256 + 255
    assert np.array_equal(load_image(deep), image)
    with pytest.raises(ImageReadError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))


def _read_error(path) -> str:
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message, message
    assert "\n" not in message, message
    return message


def test_missing_image(tmp_path):
    assert "not found" in _read_error(tmp_path / "absent.jpg")


def test_directory_image(tmp_path):
    assert "directory" in _read_error(tmp_path)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a JPEG\n")
    assert "not an image" in _read_error(path)


def test_empty_image_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "not an image" in _read_error(path)


def test_truncated_jpeg(tmp_path):
    full = tmp_path / "full.jpg"
    noise = np.random.default_rng(7).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(full, quality=90)
    data = full.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _read_error(path)


def test_engine_accepts_paths(tmp_path):
    """encode() reads files through load_image: a bad file gets the same error there."""
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    engine = our_engine("vit_pad")
    with pytest.raises(ImageReadError, match="bad.png"):
        engine.encode_batch([make_image(20, 30, seed=8), path])
