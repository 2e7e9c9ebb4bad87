"""Object masks for PerSAM: the project's one mask reader (:func:`persam_files.read_mask`,
any nonzero value is the object, or alpha != 0 in a cut-out with transparency; EXIF orientation
applied) plus the checks a reference mask needs (not a photo, size of its image, not empty,
not every pixel)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from persam_files import MaskLike, MaskReadError, mask_alpha, open_image, read_mask

__all__ = ["MAX_MASK_COLOURS", "MaskError", "MaskLike", "check_not_a_photo", "load_mask", "mask_box"]


class MaskError(MaskReadError):
    """A mask that cannot be used; the message names the file and the problem."""


# A colour mask may use this many distinct colours (object ids saved as RGB, a coloured
# brush); a photo has thousands. Grey colour images (R = G = B) are greyscale masks.
MAX_MASK_COLOURS = 16
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _colour_count(rgb: np.ndarray, limit: int) -> int | None:
    """Distinct non-grey colours of an (H, W, 3) array, or None when all pixels are grey
    (R = G = B); counting stops above ``limit``."""
    rgb = rgb[:, :, :3]
    if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
        return None
    colours = Image.fromarray(np.ascontiguousarray(rgb).astype(np.uint8), "RGB").getcolors(maxcolors=limit)
    return limit + 1 if colours is None else len(colours)


def check_not_a_photo(source: np.ndarray | Image.Image, label: str) -> None:
    """Refuse a colour image that is a photo rather than a mask (any nonzero pixel would be
    the object, so a photo would make the whole image the object). The rule: a mask file is a
    palette, greyscale or 1-bit image, a colour image that is grey (R = G = B) or uses at
    most MAX_MASK_COLOURS distinct colours, or a cut-out whose transparency carries the mask
    (:func:`persam_files.mask_alpha`; its colours are the object's and are not checked)."""
    if mask_alpha(source) is not None:
        return
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] not in (3, 4) or source.dtype != np.uint8:
            return
        rgb = source
    elif isinstance(source, Image.Image):
        if source.mode not in _COLOUR_MODES:
            return
        rgb = np.asarray(source.convert("RGB"))
    else:
        return
    count = _colour_count(rgb, MAX_MASK_COLOURS)
    if count is not None and count > MAX_MASK_COLOURS:
        raise MaskError(f"{label} looks like a photo, not a mask (more than {MAX_MASK_COLOURS} colours); a "
                        "mask is a greyscale, palette or 1-bit PNG where nonzero pixels are the object, "
                        "or a cut-out PNG whose transparent pixels are the background")


def load_mask(source: MaskLike, expected_size: tuple[int, int] | None = None,
              name: str | None = None, allow_empty: bool = False,
              allow_full: bool = False) -> np.ndarray:
    """Load a mask as an (H, W) bool array (:func:`persam_files.read_mask`).

    Palette PNGs (index > 0), 0/255 greyscale, boolean arrays, colour images that are grey
    or use at most MAX_MASK_COLOURS colours, and cut-outs with transparency (alpha != 0 is the
    object) are accepted; a colour photo is refused (:func:`check_not_a_photo`).
    ``expected_size`` (H, W) is the size of the image the mask belongs to. An empty mask is
    refused unless ``allow_empty``; a mask with every pixel the object (e.g. a greyscale photo)
    unless ``allow_full``. Every failure is a :class:`MaskError` naming the file.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "mask")
    try:
        if isinstance(source, (str, os.PathLike)):
            source = open_image(source, "mask")  # decoded once: checked, then read
        check_not_a_photo(source, label)
        mask = read_mask(source, name=label)
    except MaskError:
        raise
    except MaskReadError as exc:  # one error type for callers of load_mask
        raise MaskError(str(exc)) from None
    if expected_size is not None and tuple(mask.shape[:2]) != tuple(expected_size):
        hint = ""
        if tuple(mask.shape[:2]) == tuple(expected_size)[::-1]:  # width and height swapped
            hint = ("; images are read upright (their EXIF orientation applied): was the mask drawn on "
                    "the photo before it was turned?")
        raise MaskError(
            f"{label} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{expected_size[1]}x{expected_size[0]}{hint}"
        )
    if not allow_empty and not mask.any():
        raise MaskError(f"{label} is empty (no object pixels)")
    if not allow_full and mask.all():
        raise MaskError(f"{label} marks every pixel as the object "
                        "(a mask needs a background of 0: is it a photo?)")
    return mask


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """(x_min, y_min, x_max, y_max) of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]])
