"""Writers: every file goes to a temp file in the same folder, is fsynced, then renamed, so a
reader (or a rerun after a crash) never sees a half-written file."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

__all__ = ["atomic_write", "json_safe", "save_image", "save_label_png", "save_mask_png",
           "voc_palette", "write_bytes", "write_json", "write_text"]


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; results get the mode a plain open() would give (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temp_path)``, fsync the result, then rename it onto ``path``.

    The temp file sits in the destination folder (same file system, so the rename is atomic) and
    keeps ``path``'s suffix (writers that pick a format from it still work). On any failure the
    temp file is removed and the previous ``path``, if any, is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                             dir=path.parent)
    except OSError as exc:  # name the file the caller asked for, not the temp file
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temp, _default_file_mode())
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (temp_name, str(temp)):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, newlines written as given."""
    def write(temp: Path) -> None:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return atomic_write(path, write)


def json_safe(value: Any) -> Any:
    """``value`` made standard JSON: NaN/inf -> None, numpy scalars/arrays -> Python, paths -> str."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Standard JSON (NaN and inf written as null), atomically."""
    return write_text(path, json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")


def voc_palette(size: int = 256) -> list[int]:
    """The DAVIS / PASCAL VOC palette: index i gets the colour built from its bits."""
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


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Single-channel PNG, 0 background and 255 object."""
    image = Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)), mode="L")
    return atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette: list[int] | None = None) -> Path:
    """Palette PNG whose pixel values are object ids (DAVIS layout)."""
    image = Image.fromarray(np.asarray(labels).astype(np.uint8), mode="P")
    image.putpalette(palette or voc_palette())
    return atomic_write(path, lambda temp: image.save(temp, format="PNG"))


def save_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    """RGB picture; JPEG for .jpg/.jpeg, else PNG."""
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda temp: image.save(temp, format=fmt, **kwargs))
