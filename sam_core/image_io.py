"""Image reading for sam_core: the project's one reader, :mod:`persam_files`.

``load_image`` and ``ImageReadError`` are the same objects as ``persam_files.read_image`` and
``persam_files.ImageReadError`` (kept under these names as part of sam_core's public API), so
every part of the project sees the same pixels of the same file.
"""
from persam_files import ImageLike, ImageReadError, read_image as load_image, to_rgb_array

__all__ = ["ImageLike", "ImageReadError", "load_image", "to_rgb_array"]
