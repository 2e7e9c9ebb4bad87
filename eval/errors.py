"""Exceptions of persam_eval."""
from __future__ import annotations

__all__ = ["PredictionError"]


class PredictionError(ValueError):
    """A predicted mask is missing, unreadable, of the wrong size or has invalid ids.

    The message names the sequence and frame (DAVIS) or the object and image (PerSeg).
    Evaluation never silently scores a bad prediction as an empty mask.
    """
