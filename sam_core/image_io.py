"""Reading images into upright RGB uint8 arrays, with one-line errors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]


class ImageReadError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def _to_8bit(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def to_rgb_array(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any common dtype -> (H, W, 3) uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(_to_8bit(array)[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = _to_8bit(array[:, :, :3])
    else:
        raise ImageReadError(f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError("image is empty (zero width or height)")
    return np.ascontiguousarray(array)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """PIL image (any mode, EXIF orientation applied) -> (H, W, 3) uint8."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # 16/32-bit integer greyscale: keep the top 8 of 16 bits
        return to_rgb_array(np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16))
    return np.asarray(image.convert("RGB"))


def load_image(source: ImageLike) -> np.ndarray:
    """Load a path, PIL image or array as an upright RGB uint8 (H, W, 3) array.

    Grayscale, RGBA, palette and 16-bit images are converted; EXIF rotation is applied.
    """
    if isinstance(source, np.ndarray):
        return to_rgb_array(source)
    if isinstance(source, Image.Image):
        return pil_to_rgb(source)
    path = Path(source)
    if not path.exists():
        raise ImageReadError(f"image {path} not found")
    if path.is_dir():
        raise ImageReadError(f"image {path} is a directory")
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_rgb(image)
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path} is not an image (unrecognized format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"image {path} is unreadable or truncated ({exc})") from exc
