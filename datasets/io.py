"""File reading for the dataset readers: the project's one reader, :mod:`persam_files`.

Images come back as upright RGB ``uint8`` (H, W, 3) (EXIF orientation applied, 16-bit data
kept as its top 8 bits, ``v >> 8``); masks as (H, W) bool (any nonzero value, same EXIF rule);
label maps as (H, W) uint8 palette indices. The names below are the same objects as
``persam_files``' (``read_rgb_image`` is ``read_image``, ``read_binary_mask`` is ``read_mask``),
kept as part of ``persam_datasets``' public API.
"""
from __future__ import annotations

from persam_files import (ImageReadError, read_image as read_rgb_image, read_image_size,
                          read_label_map, read_mask as read_binary_mask)

class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout (the message names what is missing)."""
