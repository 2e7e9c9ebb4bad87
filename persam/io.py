"""Collecting input images for the command line.

Every file is read and written through :mod:`persam_files`; the writer names below are the same
objects as ``persam_files``' (``save_json`` is ``persam_files.write_json``), kept so existing
``persam.io`` imports keep working.
"""
from __future__ import annotations

from pathlib import Path

from persam_files import (IMAGE_SUFFIXES, atomic_write, list_images, save_image, save_label_png,
                          save_mask_png, voc_palette, write_json as save_json)

__all__ = ["IMAGE_SUFFIXES", "atomic_write", "collect_images", "list_images", "save_image",
           "save_json", "save_label_png", "save_mask_png", "voc_palette"]


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
