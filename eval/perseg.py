"""PerSeg evaluation with the definitions of PerSAM's ``eval_miou.py``.

For each object, over its test images (the reference image excluded):

* IoU_obj = sum of intersections / sum of unions (0 if every union is empty),
* Acc_obj = sum of intersections / sum of ground-truth areas (0 if all areas are 0),
* mIoU = mean of IoU_obj over objects, mAcc likewise; all reported in percent.

Also reported: each image's own IoU (|P & G| / |P | G|, 1 when both are empty) and
their mean over all test images ("mean per-image IoU").
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from persam_datasets import ImageReadError, PerSegDataset, read_binary_mask

from .errors import PredictionError

__all__ = [
    "ImageCounts",
    "ObjectScore",
    "PerSegScores",
    "image_counts",
    "perseg_scores",
    "evaluate_perseg",
]


@dataclass(frozen=True)
class ImageCounts:
    """Pixel counts of one test image: |P & G|, |P | G| and |G|."""

    object_name: str
    index: str
    intersection: int
    union: int
    target: int

    @property
    def key(self) -> str:
        return f"{self.object_name}/{self.index}"

    @property
    def iou(self) -> float:
        """This image's IoU as a fraction; 1.0 when prediction and ground truth are both empty."""
        return 1.0 if self.union == 0 else self.intersection / self.union


def image_counts(object_name: str, index: str, pred: np.ndarray, gt: np.ndarray) -> ImageCounts:
    """Count |P & G|, |P | G| and |G| for one image (any nonzero value is foreground)."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise PredictionError(
            f"prediction for {object_name}/{index} has shape {pred.shape} but its ground truth has {gt.shape}"
        )
    pred = pred != 0
    gt = gt != 0
    return ImageCounts(
        object_name=object_name,
        index=index,
        intersection=int(np.count_nonzero(pred & gt)),
        union=int(np.count_nonzero(pred | gt)),
        target=int(np.count_nonzero(gt)),
    )


@dataclass(frozen=True)
class ObjectScore:
    """Scores of one object, in percent."""

    iou: float
    acc: float
    num_images: int


@dataclass
class PerSegScores:
    """PerSeg results; every number is in percent. ``excluded``: objects of the folder that
    were not scored (see :data:`PAPER_EXCLUDED_OBJECTS`)."""

    miou: float
    macc: float
    mean_image_iou: float
    per_object: dict[str, ObjectScore] = field(default_factory=dict)
    per_image: dict[str, float] = field(default_factory=dict)  # "<object>/<index>" -> IoU
    excluded: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain-JSON form: ``miou``, ``macc``, ``mean_image_iou``, ``per_object``, ``per_image``."""
        return {
            "miou": self.miou,
            "macc": self.macc,
            "mean_image_iou": self.mean_image_iou,
            "per_object": {
                name: {"iou": score.iou, "acc": score.acc, "num_images": score.num_images}
                for name, score in self.per_object.items()
            },
            "per_image": dict(self.per_image),
            "excluded_objects": list(self.excluded),
        }

    def format_table(self) -> str:
        """Human-readable per-object table followed by the means (two decimals, percent)."""
        width = max([len("object")] + [len(name) for name in self.per_object])
        lines = [f"{'object':<{width}}  {'IoU %':>6}  {'Acc %':>6}  images"]
        for name, score in self.per_object.items():
            lines.append(f"{name:<{width}}  {score.iou:6.2f}  {score.acc:6.2f}  {score.num_images:6d}")
        lines.append("")
        lines.append(f"mIoU: {self.miou:.2f} %")
        lines.append(f"mAcc: {self.macc:.2f} %")
        lines.append(f"mean per-image IoU: {self.mean_image_iou:.2f} %")
        if self.excluded:
            lines.append(f"not scored, as in the paper's eval_miou.py: {', '.join(self.excluded)}")
        return "\n".join(lines)


def perseg_scores(counts: Iterable[ImageCounts]) -> PerSegScores:
    """Aggregate per-image counts into PerSeg scores (definitions in the module docstring).

    Objects appear in the order first seen. Raises ValueError if ``counts`` is empty.
    """
    by_object: dict[str, list[ImageCounts]] = {}
    for item in counts:
        by_object.setdefault(item.object_name, []).append(item)
    if not by_object:
        raise ValueError("no test images to evaluate")

    per_object: dict[str, ObjectScore] = {}
    per_image: dict[str, float] = {}
    for name, items in by_object.items():
        intersection = sum(item.intersection for item in items)
        union = sum(item.union for item in items)
        target = sum(item.target for item in items)
        # eval_miou.py divides by (sum + 1e-10): an all-empty object scores 0, not 1.
        object_iou = intersection / union if union else 0.0
        object_acc = intersection / target if target else 0.0
        per_object[name] = ObjectScore(100.0 * object_iou, 100.0 * object_acc, len(items))
        for item in items:
            per_image[item.key] = 100.0 * item.iou

    num_objects = len(per_object)
    return PerSegScores(
        miou=sum(score.iou for score in per_object.values()) / num_objects,
        macc=sum(score.acc for score in per_object.values()) / num_objects,
        mean_image_iou=sum(per_image.values()) / len(per_image),
        per_object=per_object,
        per_image=per_image,
    )


# The paper's eval_miou.py skips these PerSeg objects; its published mIoU averages the rest.
PAPER_EXCLUDED_OBJECTS = ("physics_mug", "clock", "pink_sunglasses", "cat2", "red_teapot",
                          "mug_skulls", "flower", "vase")


def evaluate_perseg(
    pred_dir: str | os.PathLike,
    gt_root: str | os.PathLike,
    ref_idx: str = "00",
    progress: bool = False,
    exclude: Iterable[str] = PAPER_EXCLUDED_OBJECTS,
) -> PerSegScores:
    """Score predicted masks ``pred_dir/<object>/NN.png`` against a PerSeg folder.

    Every test image (all indices but ``ref_idx``) of every object of ``gt_root`` must
    have a prediction of the same size as its annotation; any nonzero pixel is
    foreground (palette, grayscale and RGB PNGs alike). A missing, unreadable or
    wrong-size prediction raises PredictionError naming the object and image.
    Predictions for the reference image or for unknown objects are ignored. Objects named in
    ``exclude`` are not scored (default: the eight the paper's eval_miou.py skips, so the mean
    matches its published protocol; pass ``()`` to score every object).
    """
    dataset = PerSegDataset(gt_root, ref_idx=ref_idx)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"prediction folder {pred_dir} does not exist")

    excluded = tuple(name for name in dataset.objects if name in set(exclude))
    counts: list[ImageCounts] = []
    scored = [name for name in dataset.objects if name not in excluded]
    for name in tqdm(scored, desc="PerSeg eval", unit="object", disable=not progress):
        test_samples = dataset.test_samples(name)
        if not test_samples:
            raise PredictionError(
                f"object {name} of {dataset.root} has no test images besides the reference {ref_idx}"
            )
        if not (pred_dir / name).is_dir():
            raise PredictionError(f"no predictions for object {name}: expected folder {pred_dir / name}")
        for sample in test_samples:
            pred_path = pred_dir / name / f"{sample.index}.png"
            if not pred_path.is_file():
                raise PredictionError(f"no prediction for {sample.key}: expected {pred_path}")
            try:
                pred = read_binary_mask(pred_path)
            except ImageReadError as exc:
                raise PredictionError(f"prediction for {sample.key}: {exc}") from None
            gt = sample.read_mask()
            if pred.shape != gt.shape:
                raise PredictionError(
                    f"prediction for {sample.key} ({pred_path}) is {pred.shape[1]}x{pred.shape[0]} "
                    f"but its ground truth ({sample.mask_path}) is {gt.shape[1]}x{gt.shape[0]} (width x height)"
                )
            counts.append(image_counts(name, sample.index, pred, gt))
    scores = perseg_scores(counts)
    scores.excluded = excluded
    return scores
