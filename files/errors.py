"""The readers' one error family: the message always names the file and the problem."""
from __future__ import annotations

__all__ = ["FileReadError", "ImageReadError", "MaskReadError"]


class FileReadError(ValueError):
    """A file that cannot be read or used; the message names the file and the problem."""


class ImageReadError(FileReadError):
    """An image file (or array) that is missing, not an image, truncated or malformed."""


class MaskReadError(ImageReadError):
    """A mask or label-map file that cannot be read."""
