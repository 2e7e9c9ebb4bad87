"""Writing results safely: every file goes to a temp file first, then is renamed."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# The DAVIS / PASCAL VOC palette: index i gets the colour built from its bits.
def voc_palette(size: int = 256) -> list[int]:
    palette = []
    for index in range(size):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    return palette


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)`` then rename onto ``path``; nothing half-written survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(Path(temp_name))
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Single-channel PNG, 0 background and 255 object."""
    image = Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)), mode="L")
    return atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette: list[int] | None = None) -> Path:
    """Palette PNG whose pixel values are object ids (DAVIS layout)."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette or voc_palette())
    return atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    image = Image.fromarray(rgb)
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda temp: image.save(temp, format=fmt, **kwargs))


def save_json(path: str | os.PathLike, data: dict) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False)
    return atomic_write(path, lambda temp: temp.write_text(text + "\n"))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def collect_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders into a list of image files, with one-line errors."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise FileNotFoundError(f"input folder {path} contains no images "
                                        f"({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} not found")
    if not files:
        raise FileNotFoundError("no input images given")
    return files
