"""Readers for images, masks and label maps: one set of rules for the whole project.

Masks: any nonzero pixel is the object, except in an image with transparency (an alpha channel
with at least one pixel not fully opaque, e.g. a cut-out PNG), which is read by its alpha
(object = alpha != 0)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, MaskReadError

__all__ = ["IMAGE_SUFFIXES", "ImageLike", "MaskLike", "is_image_file", "list_images", "mask_alpha",
           "read_image", "read_image_size", "read_label_map", "read_mask", "read_palette", "to_rgb_array"]

ImageLike = str | os.PathLike | np.ndarray | Image.Image
MaskLike = str | os.PathLike | np.ndarray | Image.Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Integer greyscale modes Pillow uses for 16-bit (and 32-bit) single-band images.
_WIDE_INTEGER_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # these rotate by 90 degrees: width and height swap
# Pillow modes with an alpha band, and the array dtypes whose 4th channel is read as alpha.
_ALPHA_MODES = ("RGBA", "LA", "PA")
_ALPHA_DTYPES = (np.uint8, np.uint16)


def is_image_file(path: Path) -> bool:
    """A visible file whose suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (and its sub-folders when ``recursive``), sorted by path."""
    folder = Path(folder)
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in entries if is_image_file(path)
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def _open_decoded(path: Path, what: str, error: type[ImageReadError]) -> Image.Image:
    """Open and fully decode ``path``; every failure becomes ``error`` naming the file."""
    if not path.exists():
        raise error(f"{what} {path} not found")
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings (bomb, EXIF) are not the user's business
            with Image.open(path) as image:
                image.load()  # decode now, so a truncated file fails here with its name
                return _upright(image)  # the decoded pixels outlive the closed file
    except UnidentifiedImageError:
        raise error(f"{path} is not an image (unrecognized format)") from None
    except Image.DecompressionBombError:
        raise error(f"{what} {path} claims more pixels than Pillow's safety limit "
                    f"({(Image.MAX_IMAGE_PIXELS or 0) * 2:,}); refusing to decode it") from None
    except MemoryError:
        raise error(f"{what} {path} is too large to decode in memory") from None
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error ...
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "truncat" in reason.lower():  # the common case (an interrupted copy): say it plainly
            raise error(f"{what} {path} is truncated or corrupt ({reason})") from None
        raise error(f"{what} {path} is unreadable or malformed ({reason})") from None


def open_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """The decoded Pillow image of a file, upright (EXIF orientation applied), in its own mode
    (for checks that need the mode or colours, e.g. whether a mask file is a photo). Failures
    are :class:`ImageReadError` (``what="mask"``: :class:`MaskReadError`) naming the file."""
    return _open_decoded(Path(path), what, MaskReadError if what == "mask" else ImageReadError)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block is ignored, not fatal."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF says nothing reliable about orientation
        return image
    return image if upright is None else upright


def _to_8bit(array: np.ndarray, name: str = "image array") -> np.ndarray:
    """uint8 as is; bool False/True -> 0/255; float 0..1 (or 0..255) scaled and rounded; uint16
    is 16-bit data and keeps its top 8 bits (v >> 8, as OpenCV's imread does); any other
    integer type holds 8-bit values (e.g. an image after ``astype(int)``) and must stay in
    0..255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if finite.size and float(finite.max()) <= 1.0 else 1.0
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise ImageReadError(f"{name} is {array.dtype} with values {low}..{high}; expected 8-bit values "
                                 "0..255 (or uint16 for 16-bit data, or floats 0..1)")
        return array.astype(np.uint8)
    raise ImageReadError(f"{name} has dtype {array.dtype}; expected uint8, uint16, float or bool pixels")


def to_rgb_array(array: np.ndarray, name: str = "image array") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any common dtype -> (H, W, 3) uint8."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(_to_8bit(array, name)[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = _to_8bit(array[:, :, :3], name)
    else:
        raise ImageReadError(f"{name} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{name} is empty (zero width or height)")
    return np.ascontiguousarray(array)


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode == "RGB":
        return to_rgb_array(np.asarray(image), name)
    if image.mode in _WIDE_INTEGER_MODES:  # 16-bit data (mode "I" holds it in int32)
        return to_rgb_array(np.clip(np.asarray(image), 0, 65535).astype(np.uint16), name)
    if image.mode == "F":
        return to_rgb_array(np.asarray(image), name)
    return to_rgb_array(np.asarray(image.convert("RGB")), name)  # L, P, RGBA (alpha dropped), CMYK...


def read_image(source: ImageLike) -> np.ndarray:
    """A path, PIL image or array as an upright RGB uint8 (H, W, 3) array.

    Raises :class:`ImageReadError` naming the file for anything that cannot be read.
    """
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint16 and source.size and int(source.max()) <= 255:
            # a file's 16 bits are 16-bit data; an array's may be 8-bit values in a wider type
            warnings.warn(f"image array is uint16 with values 0..{int(source.max())}: read as 16-bit data "
                          "that is nearly black; pass uint8 if these are 8-bit values", stacklevel=2)
        return to_rgb_array(source)
    if isinstance(source, Image.Image):
        try:
            return _pil_to_rgb(_upright(source), "image")
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(f"image could not be converted to RGB ({exc})") from None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"an image is a path, a PIL image or a numpy array, not {type(source).__name__}")
    path = Path(source)
    image = _open_decoded(path, "image", ImageReadError)
    try:
        return _pil_to_rgb(image, f"image {path}")
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"image {path} could not be converted to RGB ({exc})") from None


def mask_alpha(source: np.ndarray | Image.Image) -> np.ndarray | None:
    """The alpha band of an image whose alpha carries the mask, else None.

    Alpha carries the mask when the image has one (Pillow RGBA, LA, PA; an (H, W, 4) uint8 or
    uint16 array) and at least one pixel is not fully opaque (alpha below the dtype's maximum):
    a cut-out. A fully opaque alpha says nothing, and the image is read by its colours.
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 4 or source.dtype not in _ALPHA_DTYPES:
            return None
        alpha = source[:, :, 3]
        opaque = np.iinfo(source.dtype).max
    elif isinstance(source, Image.Image):
        if source.mode not in _ALPHA_MODES:
            return None
        alpha = np.asarray(source.getchannel("A"))
        opaque = 255
    else:
        return None
    return alpha if alpha.size and bool((alpha < opaque).any()) else None


def _pil_mask(image: Image.Image) -> np.ndarray:
    mode = image.mode
    alpha = mask_alpha(image)
    if alpha is not None:  # a cut-out: the transparent pixels are the background, whatever their colour
        return alpha != 0
    if mode in ("PA", "LA"):
        return np.asarray(image)[:, :, 0] != 0  # fully opaque: the index/value band is the mask
    if mode in ("RGB", "RGBA", "RGBX"):
        return (np.asarray(image)[:, :, :3] != 0).any(axis=2)
    if mode in ("P", "L", "1", "F") or mode in _WIDE_INTEGER_MODES:
        return np.asarray(image) != 0
    return (np.asarray(image.convert("RGB")) != 0).any(axis=2)  # CMYK, YCbCr, ...


def read_mask(source: MaskLike, name: str | None = None) -> np.ndarray:
    """A mask as an (H, W) bool array: any nonzero value is the object.

    Palette PNGs: index != 0; greyscale, 16-bit, 1-bit: value != 0; colour: any channel != 0.
    An image with transparency (RGBA / LA / PA, or an (H, W, 4) uint8/uint16 array, with at
    least one pixel not fully opaque: a cut-out) is read by its alpha: alpha != 0 is the object
    (:func:`mask_alpha`); a fully opaque alpha is ignored. EXIF orientation applied, as for
    images. Raises :class:`MaskReadError`.
    """
    label = name or (f"mask {source}" if isinstance(source, (str, os.PathLike)) else "mask")
    if isinstance(source, np.ndarray):
        alpha = mask_alpha(source)
        if alpha is not None:
            mask = alpha != 0
        elif source.ndim == 3 and source.shape[2] in (1, 3, 4):
            mask = (source[:, :, :3] != 0).any(axis=2)
        elif source.ndim == 2:
            mask = source != 0
        else:
            raise MaskReadError(f"{label} has shape {source.shape}; expected (H, W)")
    elif isinstance(source, Image.Image):
        mask = _pil_mask(_upright(source))
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"a mask is a path, a PIL image or a numpy array, not {type(source).__name__}")
        path = Path(source)
        image = _open_decoded(path, "mask", MaskReadError)
        try:
            mask = _pil_mask(image)
        except Exception as exc:
            raise MaskReadError(f"mask {path} could not be read as a mask ({exc})") from None
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise MaskReadError(f"{label} is empty (zero width or height)")
    return np.ascontiguousarray(mask)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A label map (one object id per pixel) as an (H, W) uint8 array.

    Palette PNGs give their indices, greyscale (8/16/32-bit) their values, 1-bit 0/1. Colour
    images are refused (their colours are not ids), and so are values outside 0..255.
    """
    path = Path(path)
    image = _open_decoded(path, "label map", MaskReadError)
    mode = image.mode
    if mode in ("P", "L", "1"):
        labels = np.asarray(image)
    elif mode in ("PA", "LA"):
        labels = np.asarray(image)[:, :, 0]
    elif mode in _WIDE_INTEGER_MODES:
        labels = np.asarray(image)
        if labels.size and (labels.max() > 255 or labels.min() < 0):
            raise MaskReadError(f"label map {path} has values outside 0..255 "
                                f"(min {labels.min()}, max {labels.max()})")
    else:
        raise MaskReadError(f"label map {path} is a {mode} image; expected a palette (P) or "
                            "grayscale (L) PNG whose pixel values are object ids")
    return np.ascontiguousarray(labels.astype(np.uint8))


def read_palette(path: str | os.PathLike) -> list[int] | None:
    """The 768-entry RGB palette of a palette (P / PA) image, or None for any other mode."""
    path = Path(path)
    image = _open_decoded(path, "label map", MaskReadError)
    if image.mode not in ("P", "PA"):
        return None
    palette = image.getpalette() or []
    return (list(palette) + [0] * 768)[:768]


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the upright image in ``path``, without decoding its pixels."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"image {path} not found")
    if path.is_dir():
        raise ImageReadError(f"image {path} is a folder, not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                try:
                    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
                except Exception:
                    orientation = 1
    except UnidentifiedImageError:
        raise ImageReadError(f"{path} is not an image (unrecognized format)") from None
    except Exception as exc:
        raise ImageReadError(f"image {path} is unreadable or malformed ({exc})") from None
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)
