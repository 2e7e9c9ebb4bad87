"""Old import path of the file helpers (input collection for the command line is
:func:`persam.commands.support.collect_inputs`).

Every file is read and written through :mod:`persam_files`; the writer names below are the same
objects as ``persam_files``' (``save_json`` is ``persam_files.write_json``), kept so existing
``persam.io`` imports keep working.
"""
from __future__ import annotations

from persam_files import (IMAGE_SUFFIXES, atomic_write, list_images, save_image, save_label_png,
                          save_mask_png, voc_palette, write_json as save_json)

__all__ = ["IMAGE_SUFFIXES", "atomic_write", "list_images", "save_image",
           "save_json", "save_label_png", "save_mask_png", "voc_palette"]

