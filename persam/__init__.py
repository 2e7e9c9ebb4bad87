"""persam: one-shot personalization of Segment Anything.

>>> from persam import PerSAM, build_sam
>>> persam = PerSAM(build_sam("vit_t", "mobile_sam.pt"))
>>> concept = persam.learn("ref.jpg", "ref_mask.png")
>>> mask = persam.segment("new.jpg", concept).mask
"""
from sam_core import build_sam

from .concept import Concept, ConceptError
from .masks import MaskError, load_mask
from .model import (MIN_IMAGE_SIDE, ImageSizeError, PerSAM, PerSAMF, Segmentation, label_map,
                    resolve_overlaps)
from .prior import EmptyTargetError
from .video import Tracker

__version__ = "0.1.0"

__all__ = ["build_sam", "Concept", "ConceptError", "MaskError", "load_mask", "PerSAM", "PerSAMF",
           "Segmentation", "ImageSizeError", "MIN_IMAGE_SIDE", "label_map", "resolve_overlaps",
           "EmptyTargetError", "Tracker", "__version__"]
