"""Reading object masks: any nonzero value is the object."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MaskLike = Union[str, os.PathLike, np.ndarray, Image.Image]


class MaskError(ValueError):
    """A mask that cannot be used; the message names the file and the problem."""


def _pil_mask(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    array = np.asarray(image)
    if array.ndim == 3:  # RGB(A): a pixel is object if any colour channel is nonzero
        return (array[:, :, :3] != 0).any(axis=2)
    return array != 0  # palette indices, greyscale, 16-bit, 1-bit


def load_mask(source: MaskLike, expected_size: tuple[int, int] | None = None,
              name: str | None = None, allow_empty: bool = False) -> np.ndarray:
    """Load a mask as an (H, W) bool array.

    Palette PNGs (index > 0), 0/255 greyscale, RGB and boolean arrays are accepted.
    ``expected_size`` (H, W) is the size of the image the mask belongs to.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "mask")
    if isinstance(source, np.ndarray):
        array = source
        mask = (array[:, :, :3] != 0).any(axis=2) if array.ndim == 3 else np.asarray(array) != 0
        if array.ndim not in (2, 3):
            raise MaskError(f"{label} has shape {array.shape}; expected (H, W)")
    elif isinstance(source, Image.Image):
        mask = _pil_mask(source)
    else:
        path = Path(source)
        if not path.exists():
            raise MaskError(f"mask {path} not found")
        try:
            with Image.open(path) as image:
                image.load()
                mask = _pil_mask(image)
        except UnidentifiedImageError as exc:
            raise MaskError(f"{path} is not an image (unrecognized format)") from exc
        except OSError as exc:
            raise MaskError(f"mask {path} is unreadable or truncated ({exc})") from exc
    if expected_size is not None and tuple(mask.shape[:2]) != tuple(expected_size):
        raise MaskError(
            f"{label} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{expected_size[1]}x{expected_size[0]}"
        )
    if not allow_empty and not mask.any():
        raise MaskError(f"{label} is empty (no object pixels)")
    return mask


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """(x_min, y_min, x_max, y_max) of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]])
