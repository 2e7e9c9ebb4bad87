"""Multi-instance test images made from PerSeg (docs/method.md 11), for scoring ``find``.

For each object, images are made by pasting k in {0, 1, 2, 3} cut-outs of that object (taken
from its test images and masks, scaled by a factor in [0.5, 1.0], flipped half of the time) onto
the test images of other objects, with at most 20% overlap between any two pasted instances (of
the smaller one's area). The output is itself a PerSeg-layout folder whose annotations are
instance label maps::

    OUT/Images/<object>/00.jpg        the object's reference image (copied)
    OUT/Annotations/<object>/00.png   its reference mask (id 1)
    OUT/Images/<object>/NN.jpg        generated images, NN = 01, 02, ...
    OUT/Annotations/<object>/NN.png   palette label maps: 0 background, i for pasted instance i
    OUT/manifest.json                 what was pasted where (seed, sources, scales, boxes, areas)

Everything is drawn from one ``numpy`` generator seeded with ``seed``: the same inputs and seed
give the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from persam_files import save_image, save_label_png, write_json

from .perseg import PerSegDataset

__all__ = ["make_multi_instance", "paste_instances", "MAX_INSTANCE_OVERLAP", "MAX_INSTANCE_SIDE"]

MAX_INSTANCE_OVERLAP = 0.2  # of the smaller instance's area
# A cut-out is also shrunk until it spans at most this fraction of the background's height and
# width, so that three copies fit without heavy overlap on any background.
MAX_INSTANCE_SIDE = 0.45
SCALE_RANGE = (0.5, 1.0)
PLACEMENT_TRIES = 100


def _cut_out(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return image[crop], mask[crop]


def _resized(pixels: np.ndarray, mask: np.ndarray, factor: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    height, width = mask.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    if flip:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    return pixels, mask


def paste_instances(background: np.ndarray, cut_outs: list[tuple[np.ndarray, np.ndarray]], count: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paste ``count`` random cut-outs (image crop, mask crop) onto ``background``.

    Returns the composite, the (H, W) uint8 label map (instance i = i-th pasted, later pastes
    on top) and one record per pasted instance. An instance that finds no place within the
    overlap limit in ``PLACEMENT_TRIES`` tries is not pasted (so fewer than ``count`` is possible).
    """
    composite = background.copy()
    labels = np.zeros(background.shape[:2], np.uint8)
    height, width = labels.shape
    pasted: list[np.ndarray] = []  # full-size masks as pasted (before later occlusion)
    records = []
    for _ in range(count):
        source = int(rng.integers(len(cut_outs)))
        pixels, mask = cut_outs[source]
        scale = float(rng.uniform(*SCALE_RANGE))
        flip = bool(rng.random() < 0.5)
        fit = min(1.0, MAX_INSTANCE_SIDE * height / (scale * mask.shape[0]),
                  MAX_INSTANCE_SIDE * width / (scale * mask.shape[1]))
        pixels, mask = _resized(pixels, mask, scale * fit, flip)
        for _ in range(PLACEMENT_TRIES):
            y = int(rng.integers(height - mask.shape[0] + 1))
            x = int(rng.integers(width - mask.shape[1] + 1))
            placed = np.zeros_like(labels, dtype=bool)
            placed[y: y + mask.shape[0], x: x + mask.shape[1]] = mask
            area = int(placed.sum())
            if all(np.count_nonzero(placed & other) <= MAX_INSTANCE_OVERLAP * min(area, int(other.sum()))
                   for other in pasted):
                break
        else:
            continue
        region = composite[y: y + mask.shape[0], x: x + mask.shape[1]]
        region[mask] = pixels[mask]
        pasted.append(placed)
        labels[placed] = len(pasted)
        records.append({"source": source, "scale": round(scale * fit, 4), "flip": flip,
                        "box": [x, y, x + mask.shape[1] - 1, y + mask.shape[0] - 1], "area": area})
    return composite, labels, records


def make_multi_instance(perseg_root: str | os.PathLike, out_dir: str | os.PathLike, seed: int = 0,
                        images_per_object: int = 8, ref_idx: str = "00",
                        objects: list[str] | None = None) -> dict:
    """Write the multi-instance folder (see the module docstring); returns the manifest.

    Image n of an object (0-based) gets k = n mod 4 pasted instances, so every count appears
    equally often; backgrounds are drawn from the other objects' test images.
    """
    dataset = PerSegDataset(perseg_root, ref_idx=ref_idx)
    names = objects if objects is not None else dataset.objects
    if len(dataset.objects) < 2:
        raise ValueError(f"PerSeg folder {perseg_root} needs at least two objects (backgrounds come "
                         "from the other objects)")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    manifest: dict = {"seed": seed, "source": str(perseg_root), "cut_outs": {}, "images": {}}
    for name in names:
        tests = dataset.test_samples(name)
        if not tests:
            raise ValueError(f"PerSeg object {name} has no test images to cut out")
        cut_outs = [_cut_out(*sample.read_pair()) for sample in tests]
        backgrounds = [sample for other in dataset.objects if other != name
                       for sample in dataset.test_samples(other)]
        reference_image, reference_mask = dataset.reference(name).read_pair()
        save_image(out / "Images" / name / f"{ref_idx}.jpg", reference_image, quality=95)
        save_label_png(out / "Annotations" / name / f"{ref_idx}.png", reference_mask.astype(np.uint8))
        manifest["cut_outs"][name] = [sample.key for sample in tests]
        stems = [stem for stem in (f"{i:02d}" for i in range(1, images_per_object + 2)) if stem != ref_idx]
        for number, stem in zip(range(images_per_object), stems):
            background = backgrounds[int(rng.integers(len(backgrounds)))]
            composite, labels, records = paste_instances(background.read_image(), cut_outs, number % 4, rng)
            save_image(out / "Images" / name / f"{stem}.jpg", composite, quality=95)
            save_label_png(out / "Annotations" / name / f"{stem}.png", labels)
            manifest["images"][f"{name}/{stem}"] = {"background": background.key, "instances": records}
    write_json(out / "manifest.json", manifest)
    return manifest
