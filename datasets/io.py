"""Reading images, masks and label maps from disk, with errors that name the file.

Conventions shared by every reader in ``persam_datasets``:

* Images come back as upright RGB ``uint8`` arrays of shape (H, W, 3): the EXIF
  orientation is applied, grayscale / palette / RGBA / CMYK are converted to RGB, and
  16-bit data is scaled to 8 bits (value / 257, rounded).
* Masks and label maps are read as stored (no EXIF transpose, as the official
  evaluation scripts do). A palette ("P") PNG gives its palette indices, never colours.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DatasetLayoutError",
    "ImageReadError",
    "read_rgb_image",
    "read_image_size",
    "read_label_map",
    "read_binary_mask",
]

# EXIF orientations 5..8 rotate by 90 degrees, so they swap width and height.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout (the message names what is missing)."""


class ImageReadError(ValueError):
    """A file is missing, is not an image, or cannot be decoded (the message names the file)."""


def _open_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` with PIL and decode it fully, turning every failure into ImageReadError."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"file not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"expected an image file but found a folder: {path}")
    try:
        image = Image.open(path)
        image.load()  # decode now so truncated files fail here, with the file named
    except UnidentifiedImageError:
        raise ImageReadError(f"not an image: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from None
    return image


def _scale_to_uint8(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Map integer or float pixel values to uint8.

    16-bit data (or 32-bit integer data whose maximum exceeds 255, which is how older
    Pillow versions open 16-bit PNGs) is divided by 257 so that 65535 maps to 255;
    anything else is clipped to [0, 255].
    """
    values = values.astype(np.float64)
    if sixteen_bit or (values.size and values.max() > 255):
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to an (H, W, 3) uint8 RGB array."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(image), sixteen_bit=image.mode in _SIXTEEN_BIT_MODES)
        return np.repeat(gray[:, :, None], 3, axis=2)
    # L, LA, P, PA, RGBA, CMYK, YCbCr, 1 ...: PIL knows how (alpha is dropped, not blended).
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an upright RGB uint8 array of shape (H, W, 3).

    The EXIF orientation tag is applied (so a photo taken sideways comes out upright);
    grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB.
    Raises ImageReadError naming the file if it is missing, not an image, or truncated.
    """
    image = _open_image(path)
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # malformed EXIF blocks raise assorted exception types
        raise ImageReadError(f"cannot apply the EXIF orientation of {path}: {exc}") from None
    return _to_rgb_uint8(upright if upright is not None else image)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return (height, width) of the upright image in ``path`` without decoding the pixels."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"file not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except UnidentifiedImageError:
        raise ImageReadError(f"not an image: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a label map (one integer id per pixel) as an (H, W) uint8 array.

    Palette ("P"/"PA") PNGs give their palette indices, grayscale ("L"/"LA", 16- or 32-bit
    integer) images give their values, 1-bit images give 0/1. Colour images are refused:
    their colours are not ids. Values above 255 are refused too.
    """
    image = _open_image(path)
    mode = image.mode
    if mode in ("P", "L", "1"):
        labels = np.asarray(image)
    elif mode in ("PA", "LA"):
        labels = np.asarray(image)[:, :, 0]  # drop the alpha band, keep the index/value band
    elif mode in _SIXTEEN_BIT_MODES or mode == "I":
        labels = np.asarray(image)
        if labels.size and (labels.max() > 255 or labels.min() < 0):
            raise ImageReadError(
                f"label map {path} has values outside 0..255 (min {labels.min()}, max {labels.max()})"
            )
    else:
        raise ImageReadError(
            f"label map {path} is a {mode} image; expected a palette (P) or grayscale (L) PNG "
            "whose pixel values are object ids"
        )
    return labels.astype(np.uint8)


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as an (H, W) bool array: True where the pixel value is nonzero.

    Palette PNGs: palette index != 0. Grayscale / 16-bit / 1-bit: value != 0.
    RGB / RGBA / CMYK...: any colour channel != 0 (alpha is ignored).
    """
    image = _open_image(path)
    mode = image.mode
    if mode in ("P", "L", "1", "I", "F") or mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image) != 0
    if mode in ("PA", "LA"):
        return np.asarray(image)[:, :, 0] != 0
    if mode == "RGBA":
        return np.any(np.asarray(image)[:, :, :3] != 0, axis=2)
    return np.any(np.asarray(image.convert("RGB")) != 0, axis=2)
