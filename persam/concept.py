"""A learned concept: what PerSAM needs to find one object again, as a small file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from persam_files import atomic_write

METHODS = ("persam", "persam-f")
# 2: optional presence calibration (threshold and its statistics); version 1 files still load.
FORMAT_VERSION = 2


class ConceptError(ValueError):
    """A concept file that cannot be used, or a concept used with the wrong model."""


@dataclass
class Calibration:
    """A presence threshold chosen on labeled images (see :func:`persam.find.calibrate`), with
    the statistics it was chosen from: n_pos / n_neg images, AUROC of the best-instance
    scores, and precision / recall at ``threshold``."""

    threshold: float
    n_pos: int
    n_neg: int
    auroc: float
    precision: float
    recall: float

    def to_dict(self) -> dict:
        return {"threshold": float(self.threshold), "n_pos": int(self.n_pos), "n_neg": int(self.n_neg),
                "auroc": float(self.auroc), "precision": float(self.precision), "recall": float(self.recall)}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        return cls(threshold=float(data["threshold"]), n_pos=int(data["n_pos"]), n_neg=int(data["n_neg"]),
                   auroc=float(data["auroc"]), precision=float(data["precision"]),
                   recall=float(data["recall"]))


@dataclass
class Concept:
    """What PerSAM learned from the reference image(s).

    target_embedding: (256,) mean feature of the target cells (raw; PerSAM's semantic prompt).
    target_feature: (256,) normalized feature used for the similarity map (mean for PerSAM,
        (max + mean) / 2 for PerSAM-F).
    mask_weights: (3,) PerSAM-F scale weights, None for PerSAM.
    model_type / fingerprint: the SAM model the features come from.
    calibration: the presence threshold chosen for ``find`` and its statistics, or None
        (``find`` then uses ``persam.find.DEFAULT_THRESHOLD``).
    """

    method: str
    target_embedding: torch.Tensor
    target_feature: torch.Tensor
    model_type: str
    fingerprint: str
    mask_weights: torch.Tensor | None = None
    name: str = ""
    num_references: int = 1
    meta: dict = field(default_factory=dict)
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConceptError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.method == "persam-f" and self.mask_weights is None:
            raise ConceptError("a PerSAM-F concept needs mask_weights")

    def __repr__(self) -> str:
        """One line: what a person needs to tell concepts apart (not the 256-value tensors)."""
        parts = [self.method, f"SAM {self.model_type}"]
        if self.name:
            parts.insert(0, repr(self.name))
        parts.append(f"{self.num_references} reference{'s' if self.num_references != 1 else ''}")
        if self.mask_weights is not None:
            weights = [float(w) for w in self.mask_weights.reshape(-1).tolist()]
            parts.append("mask weights " + "/".join(f"{w:.3f}" for w in weights))
        return f"Concept({', '.join(parts)})"

    def to_dict(self) -> dict:
        return {
            "format_version": torch.tensor(FORMAT_VERSION),
            "method": self.method,
            "target_embedding": self.target_embedding.detach().cpu().float(),
            "target_feature": self.target_feature.detach().cpu().float(),
            "mask_weights": None if self.mask_weights is None else self.mask_weights.detach().cpu().float(),
            "model_type": self.model_type,
            "fingerprint": self.fingerprint,
            "name": self.name,
            "num_references": self.num_references,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the concept (a few KiB) atomically: temp file, then rename."""
        data = self.to_dict()
        return atomic_write(path, lambda temp: torch.save(data, temp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Concept":
        """A concept saved by :meth:`save` (any suffix); :class:`ConceptError` naming the file
        when it is missing, not a concept file, damaged or from a newer persam."""
        path = Path(path)
        if not path.exists():
            raise ConceptError(f"concept file {path} not found")
        if path.is_dir():
            raise ConceptError(f"concept file {path} is a folder, not a file")
        not_a_concept = (f"{path} is not a persam concept file (not a file persam saved; was it "
                         "written by `persam learn`?)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # torch's own text (pickle opcodes, zip internals) helps nobody here
            try:
                with open(path, "rb") as handle:
                    zipped = handle.read(2) == b"PK"  # torch.save writes a zip archive
            except OSError as exc:
                raise ConceptError(f"concept file {path} cannot be read ({exc.strerror or exc})") from None
            if zipped:
                raise ConceptError(f"concept file {path} is truncated or corrupt; run `persam learn` "
                                   "again to make a new one") from None
            raise ConceptError(not_a_concept) from None
        required = ("method", "target_embedding", "target_feature", "model_type", "fingerprint")
        if not isinstance(data, dict) or any(key not in data for key in required):
            raise ConceptError(not_a_concept)
        try:
            version = int(data.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise ConceptError(f"{path} was written by a newer persam (format {version})")
            calibration = data.get("calibration")  # absent before format 2
            try:
                calibration = None if calibration is None else Calibration.from_dict(calibration)
            except (KeyError, TypeError, ValueError) as exc:
                raise ConceptError(f"{path} has a malformed calibration ({type(exc).__name__})") from None
            concept = cls(method=data["method"], target_embedding=data["target_embedding"],
                          target_feature=data["target_feature"], model_type=data["model_type"],
                          fingerprint=data["fingerprint"], mask_weights=data.get("mask_weights"),
                          name=data.get("name", ""), num_references=int(data.get("num_references", 1)),
                          calibration=calibration)
            concept.check()
        except ConceptError as exc:
            message = str(exc)
            raise ConceptError(message if str(path) in message else f"{path}: {message}") from None
        except Exception as exc:  # a field of the wrong type: damaged or not ours
            raise ConceptError(f"{path} is not a valid persam concept file "
                               f"({type(exc).__name__} in its fields)") from None
        return concept

    def check(self) -> None:
        """Field types and shapes: (256,) float embeddings, (3,) weights, string names."""
        for label, value in (("model_type", self.model_type), ("fingerprint", self.fingerprint),
                             ("name", self.name)):
            if not isinstance(value, str):
                raise ConceptError(f"concept field {label} is a {type(value).__name__}, not a string")
        for label, tensor, size in (("target_embedding", self.target_embedding, None),
                                    ("target_feature", self.target_feature, None),
                                    ("mask_weights", self.mask_weights, 3)):
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 1 or not tensor.is_floating_point():
                raise ConceptError(f"concept field {label} is not a 1-D float tensor")
            if size is not None and tensor.numel() != size:
                raise ConceptError(f"concept field {label} has {tensor.numel()} values, expected {size}")
        if self.target_embedding.shape != self.target_feature.shape:
            raise ConceptError("concept target_embedding and target_feature differ in size")
