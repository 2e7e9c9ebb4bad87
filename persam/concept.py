"""A learned concept: what PerSAM needs to find one object again, as a small file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .io import atomic_write

METHODS = ("persam", "persam-f")
FORMAT_VERSION = 1


class ConceptError(ValueError):
    """A concept file that cannot be used, or a concept used with the wrong model."""


@dataclass
class Concept:
    """What PerSAM learned from the reference image(s).

    target_embedding: (256,) mean feature of the target cells (raw; PerSAM's semantic prompt).
    target_feature: (256,) normalized feature used for the similarity map (mean for PerSAM,
        (max + mean) / 2 for PerSAM-F).
    mask_weights: (3,) PerSAM-F scale weights, None for PerSAM.
    model_type / fingerprint: the SAM model the features come from.
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
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the concept (a few KiB) atomically: temp file, then rename."""
        data = self.to_dict()
        return atomic_write(path, lambda temp: torch.save(data, temp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Concept":
        path = Path(path)
        if not path.exists():
            raise ConceptError(f"concept file {path} not found")
        if path.is_dir():
            raise ConceptError(f"concept file {path} is a folder, not a file")
        not_a_concept = (f"{path} is not a persam concept file (not a file persam saved; was it "
                         "written by `persam learn`?)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's own text (pickle opcodes, zip internals) helps nobody here
            with open(path, "rb") as handle:
                zipped = handle.read(2) == b"PK"  # torch.save writes a zip archive
            if zipped:
                raise ConceptError(f"concept file {path} is truncated or corrupt; run `persam learn` "
                                   "again to make a new one") from exc
            raise ConceptError(not_a_concept) from exc
        required = ("method", "target_embedding", "target_feature", "model_type", "fingerprint")
        if not isinstance(data, dict) or any(key not in data for key in required):
            raise ConceptError(not_a_concept)
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ConceptError(f"{path} was written by a newer persam (format {version})")
        return cls(method=data["method"], target_embedding=data["target_embedding"],
                   target_feature=data["target_feature"], model_type=data["model_type"],
                   fingerprint=data["fingerprint"], mask_weights=data.get("mask_weights"),
                   name=data.get("name", ""), num_references=int(data.get("num_references", 1)))
