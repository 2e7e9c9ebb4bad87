"""A tiny generated PerSeg-layout folder for the find / presence / instance tests (generated here; needs no data outside the repository)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from persam_files import save_image, save_mask_png
from sam_fixtures import make_image

# object name -> (seed, shape drawn in its colour)
OBJECTS = {"blue_box": ((40, 60, 220), "box"), "green_disc": ((50, 200, 70), "disc")}


def make_perseg(root: Path, images_per_object: int = 3, size: tuple[int, int] = (96, 128)) -> Path:
    """ROOT/Images/<object>/NN.jpg and ROOT/Annotations/<object>/NN.png (00 = reference)."""
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    for index, (name, (colour, shape)) in enumerate(OBJECTS.items()):
        for number in range(images_per_object):
            rng = np.random.default_rng(100 * index + number)
            image = make_image(height, width, seed=100 * index + number)
            cy, cx = int(rng.integers(30, height - 30)), int(rng.integers(30, width - 30))
            radius = int(rng.integers(14, 24))
            if shape == "box":
                mask = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
            image[mask] = colour
            save_image(root / "Images" / name / f"{number:02d}.jpg", image, quality=95)
            save_mask_png(root / "Annotations" / name / f"{number:02d}.png", mask)
    return root
