"""Pictures for people: masks blended over the image, prompt points and boxes drawn."""
from __future__ import annotations

import cv2
import numpy as np

from persam_files import voc_palette

_PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
_OBJECT_COLOUR = (30, 144, 255)


def draw_overlay(image: np.ndarray, masks: list[np.ndarray] | np.ndarray, points: np.ndarray | None = None,
                 labels: np.ndarray | None = None, box: np.ndarray | None = None,
                 alpha: float = 0.5, colours: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """RGB uint8 image with each mask tinted and outlined, positive points as green stars,
    negative points as red stars, and the box prompt as a rectangle."""
    canvas = image.copy()
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks]
    scale = max(1, round(max(image.shape[:2]) / 500))
    for index, mask in enumerate(masks):
        colour = colours[index] if colours else (_OBJECT_COLOUR if len(masks) == 1 else tuple(
            int(c) for c in _PALETTE[index + 1]))
        if mask.any():
            tint = np.array(colour, dtype=np.float32)
            canvas[mask] = (canvas[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colour, thickness=scale)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 215, 0), thickness=scale)
    if points is not None:
        for (x, y), label in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
            colour = (0, 220, 0) if label == 1 else (230, 0, 0)
            cv2.drawMarker(canvas, (int(x), int(y)), (255, 255, 255), cv2.MARKER_STAR, 22 * scale, 4 * scale)
            cv2.drawMarker(canvas, (int(x), int(y)), colour, cv2.MARKER_STAR, 20 * scale, 2 * scale)
    return canvas


def instance_overlay(image: np.ndarray, masks: list[np.ndarray], scores: list[float],
                     alpha: float = 0.4) -> np.ndarray:
    """Each instance tinted and outlined in its palette colour (instance i gets colour i + 1,
    as in the label map), with its score written at the top-left of its outline."""
    colours = [tuple(int(c) for c in _PALETTE[index + 1]) for index in range(len(masks))]
    canvas = draw_overlay(image, masks, alpha=alpha, colours=colours) if masks else image.copy()
    scale = max(1, round(max(image.shape[:2]) / 500))
    for mask, score, colour in zip(masks, scores, colours):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        origin = (int(cols[0]), max(int(rows[0]) - 4 * scale, 12 * scale))
        for thickness, ink in ((3 * scale, (255, 255, 255)), (scale, colour)):
            cv2.putText(canvas, f"{score:.2f}", origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, ink, thickness,
                        cv2.LINE_AA)
    return canvas
