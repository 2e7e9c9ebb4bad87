"""Dataset readers for persam (installed as ``persam_datasets``).

* :class:`PerSegDataset` - the PerSeg benchmark (``Images/<object>/NN.jpg``,
  ``Annotations/<object>/NN.png``).
* :class:`DavisDataset` - DAVIS-2017 (``JPEGImages/480p``, ``Annotations/480p``,
  ``ImageSets/2017/<split>.txt``).
* :func:`make_multi_instance` - seeded multi-instance images made from PerSeg (docs/method.md 11).
* Image helpers that return upright RGB uint8 images, label maps and boolean masks.

Readers list files when opened and read pixels only on access. Layout problems raise
:class:`DatasetLayoutError`; unreadable files raise :class:`ImageReadError`. Both are
``ValueError`` subclasses whose message names the folder or file.
"""
from .davis import VOID_LABEL, DavisDataset
from .io import (
    DatasetLayoutError,
    ImageReadError,
    read_binary_mask,
    read_image_size,
    read_label_map,
    read_rgb_image,
)
from .multi_instance import make_multi_instance, paste_instances
from .perseg import IMAGE_EXTENSIONS, PerSegDataset, PerSegSample

__all__ = [
    "DatasetLayoutError",
    "ImageReadError",
    "read_rgb_image",
    "read_image_size",
    "read_label_map",
    "read_binary_mask",
    "PerSegDataset",
    "PerSegSample",
    "IMAGE_EXTENSIONS",
    "DavisDataset",
    "VOID_LABEL",
    "make_multi_instance",
    "paste_instances",
]
