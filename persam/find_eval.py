"""The two ``find`` protocols of docs/method.md 11, run with a model; the metrics are persam_eval's.

* PerSeg presence: a concept per object, learned from its reference; positives are the object's
  test images, negatives the test images of every other object. Per object: AUROC of the
  best-instance scores, precision / recall / F1 at the threshold; the mean AUROC over objects.
* Multi-instance: on a folder from ``persam_datasets.make_multi_instance`` (PerSeg layout with
  instance label maps), instance matching at IoU 0.5 and count accuracy, per object and pooled.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from persam_datasets import PerSegDataset, read_label_map
from persam_eval import InstanceCounts, auroc, instance_counts, presence_counts

from .find import resolve_threshold

Progress = Callable[[Iterable], Iterable]


def _learn_all(persam, dataset: PerSegDataset, objects: list[str]) -> dict:
    concepts = {}
    for name in objects:
        image, mask = dataset.reference(name).read_pair()
        concepts[name] = persam.learn(image, mask, name=name)
    return concepts


def perseg_presence(persam, dataset: PerSegDataset, threshold: float | None = None, max_instances: int = 10,
                    objects: list[str] | None = None, progress: Progress | None = None) -> dict:
    """Scores every test image against every object's concept (one encoder pass per image)."""
    objects = objects or dataset.objects
    if len(objects) < 2:
        raise ValueError(f"PerSeg folder {dataset.root}: the presence protocol needs at least two objects")
    concepts = _learn_all(persam, dataset, objects)
    samples = [sample for name in objects for sample in dataset.test_samples(name)]
    scores = np.zeros((len(samples), len(objects)))
    for row, sample in enumerate(progress(samples) if progress else samples):
        _, embedding = persam.embed(sample.read_image())
        detections = persam.find_many_embedding(embedding, [concepts[n] for n in objects],
                                                threshold=float("-inf"), max_instances=max_instances)
        scores[row] = [detection.score for detection in detections]
        persam.cache.clear()  # every test image is seen once
    owners = np.array([sample.object_name for sample in samples])
    per_object = {}
    for column, name in enumerate(objects):
        positive, negative = scores[owners == name, column], scores[owners != name, column]
        used = resolve_threshold(concepts[name], threshold)
        counts = presence_counts(positive, negative, used)
        per_object[name] = {"auroc": auroc(positive, negative), "precision": counts.precision,
                            "recall": counts.recall, "f1": counts.f1, "threshold": used,
                            "positives": int(positive.size), "negatives": int(negative.size)}
    return {"mean_auroc": float(np.mean([v["auroc"] for v in per_object.values()])),
            "per_object": per_object, "images": [s.key for s in samples], "objects": objects,
            "scores": scores.tolist()}


def format_presence(result: dict) -> str:
    lines = [f"{'object':<28}{'AUROC':>8}{'prec':>8}{'recall':>8}{'F1':>8}{'thresh':>8}"]
    for name, row in result["per_object"].items():
        lines.append(f"{name:<28}{row['auroc']:8.4f}{row['precision']:8.3f}{row['recall']:8.3f}"
                     f"{row['f1']:8.3f}{row['threshold']:8.3f}")
    lines.append(f"mean AUROC: {result['mean_auroc']:.4f}")
    return "\n".join(lines)


def multi_instance(persam, dataset: PerSegDataset, threshold: float | None = None, max_instances: int = 10,
                   progress: Progress | None = None) -> dict:
    """Instance precision / recall (IoU >= 0.5, greedy by score) and count accuracy."""
    concepts = _learn_all(persam, dataset, dataset.objects)
    samples = [sample for name in dataset.objects for sample in dataset.test_samples(name)]
    per_object = {name: InstanceCounts() for name in dataset.objects}
    for sample in progress(samples) if progress else samples:
        detection = persam.find(sample.read_image(), concepts[sample.object_name], threshold=threshold,
                                max_instances=max_instances)
        labels = read_label_map(sample.mask_path)
        truth = [labels == value for value in np.unique(labels) if value != 0]
        per_object[sample.object_name].add(instance_counts([i.mask for i in detection.instances], truth))
        persam.cache.clear()
    total = InstanceCounts()
    for counts in per_object.values():
        total.add(counts)
    return {"total": total.to_dict(), "per_object": {n: c.to_dict() for n, c in per_object.items()},
            "threshold": {n: resolve_threshold(c, threshold) for n, c in concepts.items()}}


def format_instances(result: dict) -> str:
    lines = [f"{'object':<28}{'images':>8}{'prec':>8}{'recall':>8}{'count acc':>11}"]
    rows = list(result["per_object"].items()) + [("all", result["total"])]
    for name, row in rows:
        lines.append(f"{name:<28}{row['images']:8d}{row['precision']:8.3f}{row['recall']:8.3f}"
                     f"{row['count_accuracy']:11.3f}")
    total = result["total"]
    lines.append(f"instance precision: {total['precision']:.4f}  recall: {total['recall']:.4f}  "
                 f"count accuracy: {total['count_accuracy']:.4f}")
    return "\n".join(lines)
