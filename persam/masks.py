"""Object masks for PerSAM: the project's one mask reader (:func:`persam_files.read_mask`,
any nonzero value is the object, EXIF orientation applied) plus the checks a reference mask
needs (size of its image, not empty)."""
from __future__ import annotations

import os

import numpy as np
from persam_files import MaskLike, MaskReadError, read_mask

__all__ = ["MaskError", "MaskLike", "load_mask", "mask_box"]


class MaskError(MaskReadError):
    """A mask that cannot be used; the message names the file and the problem."""


def load_mask(source: MaskLike, expected_size: tuple[int, int] | None = None,
              name: str | None = None, allow_empty: bool = False) -> np.ndarray:
    """Load a mask as an (H, W) bool array (:func:`persam_files.read_mask`).

    Palette PNGs (index > 0), 0/255 greyscale, RGB and boolean arrays are accepted.
    ``expected_size`` (H, W) is the size of the image the mask belongs to. Every failure is a
    :class:`MaskError` naming the file.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "mask")
    try:
        mask = read_mask(source, name=label)
    except MaskError:
        raise
    except MaskReadError as exc:  # one error type for callers of load_mask
        raise MaskError(str(exc)) from None
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
