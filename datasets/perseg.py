"""Reader for the PerSeg benchmark folder layout.

Layout::

    ROOT/Images/<object>/NN.jpg         photos (.jpg, .jpeg or .png)
    ROOT/Annotations/<object>/NN.png    masks; any nonzero value is the object

One image per object (index ``"00"`` by convention) is the reference; the others are
test images. Opening a dataset lists files and checks the layout; pixels are read only
when asked for.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import DatasetLayoutError, read_binary_mask, read_rgb_image

__all__ = ["PerSegSample", "PerSegDataset", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def index_sort_key(index: str) -> tuple[float, str]:
    """Sort key for image indices: numeric indices by value ("2" < "10"), then the rest by name."""
    return (int(index) if index.isdigit() else math.inf, index)


def _visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` except hidden ones (.DS_Store and friends)."""
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]


@dataclass(frozen=True)
class PerSegSample:
    """One image of one object and its annotation; pixels are read on demand."""

    object_name: str
    index: str  # file stem, e.g. "01"
    image_path: Path
    mask_path: Path | None  # None: a test image without annotation (allowed when not scoring)

    @property
    def key(self) -> str:
        """``"<object>/<index>"``, the name used in per-image results."""
        return f"{self.object_name}/{self.index}"

    def read_image(self) -> np.ndarray:
        """The photo as an upright RGB uint8 array (H, W, 3)."""
        return read_rgb_image(self.image_path)

    def read_mask(self) -> np.ndarray:
        """The annotation as a bool array (H, W), True on the object."""
        if self.mask_path is None:
            raise DatasetLayoutError(f"{self.key} has no annotation")
        return read_binary_mask(self.mask_path)

    def read_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask), after checking that both have the same height and width."""
        image, mask = self.read_image(), self.read_mask()
        if image.shape[:2] != mask.shape:
            raise DatasetLayoutError(
                f"mask {self.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{self.image_path} is {image.shape[1]}x{image.shape[0]} (width x height)"
            )
        return image, mask


class PerSegDataset:
    """The objects of a PerSeg folder, each with its reference and test samples.

    Objects are sorted by name and images by index. Construction checks the layout and
    raises DatasetLayoutError naming the first missing folder or file. With
    ``test_annotations=False`` only the references need an annotation (to segment without
    scoring); a test image without one has ``mask_path`` None.
    """

    def __init__(self, root: str | os.PathLike, ref_idx: str = "00", test_annotations: bool = True) -> None:
        self.root = Path(root)
        self.ref_idx = str(ref_idx)
        self.test_annotations = test_annotations
        self.images_dir = self.root / "Images"
        self.annotations_dir = self.root / "Annotations"
        self._samples: dict[str, list[PerSegSample]] = self._scan()

    def _scan(self) -> dict[str, list[PerSegSample]]:
        if not self.root.is_dir():
            raise DatasetLayoutError(f"PerSeg folder {self.root} does not exist")
        if not self.images_dir.is_dir():
            raise DatasetLayoutError(f"PerSeg folder {self.root} has no Images/ folder")
        if not self.annotations_dir.is_dir():
            raise DatasetLayoutError(f"PerSeg folder {self.root} has no Annotations/ folder")
        object_dirs = sorted(
            (entry for entry in _visible_entries(self.images_dir) if entry.is_dir()),
            key=lambda entry: entry.name,
        )
        if not object_dirs:
            raise DatasetLayoutError(f"PerSeg folder {self.root} has no object folders in Images/")
        samples: dict[str, list[PerSegSample]] = {}
        for object_dir in object_dirs:
            samples[object_dir.name] = self._scan_object(object_dir)
        return samples

    def _scan_object(self, object_dir: Path) -> list[PerSegSample]:
        name = object_dir.name
        annotation_dir = self.annotations_dir / name
        if not annotation_dir.is_dir():
            raise DatasetLayoutError(
                f"PerSeg folder {self.root}: Images/{name} has no matching Annotations/{name} folder"
            )
        image_files = [
            entry
            for entry in _visible_entries(object_dir)
            if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not image_files:
            raise DatasetLayoutError(f"PerSeg folder {self.root}: Images/{name} has no images")
        stems = [entry.stem for entry in image_files]
        duplicated = sorted({stem for stem in stems if stems.count(stem) > 1})
        if duplicated:
            raise DatasetLayoutError(
                f"PerSeg folder {self.root}: Images/{name} has several images with index {duplicated[0]}"
            )
        samples = []
        for image_file in sorted(image_files, key=lambda entry: index_sort_key(entry.stem)):
            mask_file = annotation_dir / f"{image_file.stem}.png"
            if not mask_file.is_file() and not self.test_annotations and image_file.stem != self.ref_idx:
                samples.append(PerSegSample(name, image_file.stem, image_file, None))
                continue
            if not mask_file.is_file():
                raise DatasetLayoutError(
                    f"PerSeg folder {self.root}: no annotation for Images/{name}/{image_file.name}: "
                    f"expected Annotations/{name}/{mask_file.name}"
                )
            samples.append(PerSegSample(name, image_file.stem, image_file, mask_file))
        if not any(sample.index == self.ref_idx for sample in samples):
            raise DatasetLayoutError(
                f"PerSeg folder {self.root}: object {name} has no reference image with index "
                f"{self.ref_idx} in Images/{name}"
            )
        return samples

    @property
    def objects(self) -> list[str]:
        """Object names, sorted."""
        return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, object_name: object) -> bool:
        return object_name in self._samples

    def samples(self, object_name: str) -> list[PerSegSample]:
        """All samples of ``object_name`` (reference included), sorted by index."""
        try:
            return list(self._samples[object_name])
        except KeyError:
            raise KeyError(f"PerSeg folder {self.root} has no object {object_name!r}") from None

    def reference(self, object_name: str) -> PerSegSample:
        """The reference sample (index ``ref_idx``) of ``object_name``."""
        return next(s for s in self.samples(object_name) if s.index == self.ref_idx)

    def test_samples(self, object_name: str) -> list[PerSegSample]:
        """The samples of ``object_name`` other than the reference, sorted by index."""
        return [s for s in self.samples(object_name) if s.index != self.ref_idx]

    def __repr__(self) -> str:
        count = sum(len(s) for s in self._samples.values())
        return f"PerSegDataset({str(self.root)!r}, objects={len(self)}, images={count}, ref_idx={self.ref_idx!r})"
