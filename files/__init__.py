"""One way to read and write every file persam touches (installed as ``persam_files``).

Used by ``sam_core``, ``persam``, ``persam_eval``, ``persam_datasets`` and the command line, so
that every part sees the same pixels of the same file and writes files the same safe way.
It depends on numpy and Pillow only (no model code).

Readers
    :func:`read_image` - upright RGB uint8 (H, W, 3). EXIF orientation applied; grayscale,
    palette, RGBA (alpha dropped), CMYK -> RGB; 16-bit -> 8-bit by ``v >> 8`` (what OpenCV's
    ``imread``, and so the paper's code, sees).
    :func:`read_mask` - (H, W) bool, any nonzero value is the object (a cut-out with transparency:
        alpha != 0, see :func:`mask_alpha`); same EXIF rule.
    :func:`read_label_map` - (H, W) uint8 object ids (palette indices or gray values).
    :func:`read_palette` - the RGB palette of a palette image (None for other modes).
    :func:`read_image_size` - (H, W) of the upright image without decoding pixels.
    A file that cannot be read raises :class:`ImageReadError` (or its subclass
    :class:`MaskReadError`) naming the file; no other exception type escapes a reader.

Writers (temp file in the same folder, fsync, rename; file mode as a plain ``open`` gives)
    :func:`atomic_write`, :func:`write_text`, :func:`write_bytes`, :func:`write_json`
    (NaN/inf written as null), :func:`save_mask_png`, :func:`save_label_png`, :func:`save_image`.
"""
from .errors import FileReadError, ImageReadError, MaskReadError
from .readers import (IMAGE_SUFFIXES, ImageLike, MaskLike, is_image_file, list_images, mask_alpha,
                      open_image, read_image, read_image_size, read_label_map, read_mask, read_palette,
                      to_rgb_array)
from .writers import (atomic_write, json_safe, save_image, save_label_png, save_mask_png,
                      voc_palette, write_bytes, write_json, write_text)

__all__ = [
    "FileReadError", "ImageReadError", "MaskReadError",
    "IMAGE_SUFFIXES", "ImageLike", "MaskLike", "is_image_file", "list_images", "mask_alpha", "open_image",
    "read_image", "read_image_size", "read_label_map", "read_mask", "read_palette", "to_rgb_array",
    "atomic_write", "json_safe", "save_image", "save_label_png", "save_mask_png", "voc_palette",
    "write_bytes", "write_json", "write_text",
]
