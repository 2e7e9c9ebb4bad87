"""persam: one-shot personalization of Segment Anything.

>>> from persam import PerSAM, build_sam
>>> persam = PerSAM(build_sam("vit_t", "mobile_sam.pt"))
>>> concept = persam.learn("ref.jpg", "ref_mask.png")
>>> clicked = persam.reference_mask("ref.jpg", points=[(120, 80)])  # no mask file? one click
>>> concept = persam.learn("ref.jpg", clicked)
>>> mask = persam.segment("new.jpg", concept).mask
>>> detection = persam.find("new.jpg", concept)   # all copies, and whether it is there
>>> detection.present, [i.box for i in detection.instances]
"""
from sam_core import build_sam

from .concept import Calibration, Concept, ConceptError
from .find import DEFAULT_THRESHOLD, Detection, Instance
from .masks import MaskError, load_mask
from .model import (MIN_IMAGE_SIDE, ImageSizeError, PerSAM, PerSAMF, Segmentation, label_map,
                    resolve_overlaps)
from .prior import EmptyTargetError
from .reference import PromptError
from .video import Tracker

__version__ = "0.1.0"

__all__ = ["build_sam", "Calibration", "Concept", "DEFAULT_THRESHOLD", "Detection", "Instance", "ConceptError",
           "MaskError", "load_mask", "PerSAM", "PerSAMF", "Segmentation", "ImageSizeError", "MIN_IMAGE_SIDE",
           "label_map", "resolve_overlaps", "EmptyTargetError", "PromptError", "Tracker", "__version__"]
