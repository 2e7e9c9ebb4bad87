"""Reader for the DAVIS-2017 folder layout (semi-supervised task).

Layout::

    ROOT/JPEGImages/480p/<sequence>/00000.jpg
    ROOT/Annotations/480p/<sequence>/00000.png   palette PNG: pixel value = object id,
                                                  0 = background, 255 = void
    ROOT/ImageSets/2017/<split>.txt              one sequence name per line

Label maps come back with void (255) set to 0, as the official toolkit does for
ground truth. The number of objects of a sequence is the largest id in its first
annotation (the toolkit's definition). Opening a dataset checks the layout; frames and
annotations are listed per sequence and read only when asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import DatasetLayoutError, read_label_map, read_rgb_image

__all__ = ["DavisDataset", "VOID_LABEL"]

VOID_LABEL = 255


class DavisDataset:
    """Sequences of one DAVIS-2017 split, with lazy access to frames and annotations."""

    def __init__(
        self, root: str | os.PathLike, split: str = "val", resolution: str = "480p"
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        self.images_dir = self.root / "JPEGImages" / resolution
        self.annotations_dir = self.root / "Annotations" / resolution
        self.split_file = self.root / "ImageSets" / "2017" / f"{split}.txt"
        self._check_layout()
        self.sequences: list[str] = self._read_split_file()
        for sequence in self.sequences:
            if not (self.images_dir / sequence).is_dir():
                raise DatasetLayoutError(
                    f"DAVIS folder {self.root}: sequence {sequence} (listed in "
                    f"ImageSets/2017/{split}.txt) has no folder JPEGImages/{resolution}/{sequence}"
                )

    def _check_layout(self) -> None:
        if not self.root.is_dir():
            raise DatasetLayoutError(f"DAVIS folder {self.root} does not exist")
        for folder, relative in (
            (self.images_dir, f"JPEGImages/{self.resolution}"),
            (self.annotations_dir, f"Annotations/{self.resolution}"),
        ):
            if not folder.is_dir():
                raise DatasetLayoutError(f"DAVIS folder {self.root} has no {relative}/ folder")
        if not self.split_file.is_file():
            raise DatasetLayoutError(
                f"DAVIS folder {self.root} has no ImageSets/2017/{self.split}.txt "
                f"(the list of sequences of the {self.split!r} split)"
            )

    def _read_split_file(self) -> list[str]:
        names = [line.strip() for line in self.split_file.read_text().splitlines()]
        names = [name for name in names if name]  # tolerate blank lines
        if not names:
            raise DatasetLayoutError(f"DAVIS split file {self.split_file} lists no sequences")
        return list(dict.fromkeys(names))  # keep file order, drop repeats

    def __len__(self) -> int:
        return len(self.sequences)

    def _check_sequence(self, sequence: str) -> None:
        if sequence not in self.sequences:
            raise KeyError(f"sequence {sequence!r} is not in the {self.split!r} split of {self.root}")

    def frame_paths(self, sequence: str) -> list[Path]:
        """The JPEG frames of ``sequence``, sorted by name."""
        self._check_sequence(sequence)
        frames = sorted(p for p in (self.images_dir / sequence).glob("*.jpg") if p.is_file())
        if not frames:
            raise DatasetLayoutError(
                f"DAVIS folder {self.root}: JPEGImages/{self.resolution}/{sequence} has no .jpg frames"
            )
        return frames

    def frame_names(self, sequence: str) -> list[str]:
        """Frame ids of ``sequence`` (file stems such as ``"00000"``), in order."""
        return [path.stem for path in self.frame_paths(sequence)]

    def annotation_path(self, sequence: str, frame_name: str) -> Path:
        """Path of the annotation of one frame; raises DatasetLayoutError if it is missing."""
        path = self.annotations_dir / sequence / f"{frame_name}.png"
        if not path.is_file():
            raise DatasetLayoutError(
                f"DAVIS folder {self.root}: no annotation for JPEGImages/{self.resolution}/"
                f"{sequence}/{frame_name}.jpg: expected Annotations/{self.resolution}/{sequence}/{frame_name}.png"
            )
        return path

    def annotation_paths(self, sequence: str) -> list[Path]:
        """Annotation of every frame of ``sequence``, in frame order."""
        return [self.annotation_path(sequence, name) for name in self.frame_names(sequence)]

    def read_frame(self, sequence: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``sequence`` as an upright RGB uint8 array (H, W, 3)."""
        return read_rgb_image(self.frame_paths(sequence)[index])

    def first_label_map(self, sequence: str) -> np.ndarray:
        """The first frame's label map, (H, W) uint8, void (255) set to 0."""
        first = self.frame_names(sequence)[0]
        return _without_void(read_label_map(self.annotation_path(sequence, first)))

    def label_maps(self, sequence: str) -> np.ndarray:
        """All ground-truth label maps of ``sequence`` as a (T, H, W) uint8 array, void set to 0."""
        paths = self.annotation_paths(sequence)
        first = _without_void(read_label_map(paths[0]))
        stack = np.empty((len(paths), *first.shape), dtype=np.uint8)
        stack[0] = first
        for t, path in enumerate(paths[1:], start=1):
            labels = read_label_map(path)
            if labels.shape != first.shape:
                raise DatasetLayoutError(
                    f"DAVIS annotation {path} is {labels.shape[1]}x{labels.shape[0]} but the first "
                    f"annotation of sequence {sequence} is {first.shape[1]}x{first.shape[0]}"
                )
            stack[t] = _without_void(labels)
        return stack

    def num_objects(self, sequence: str) -> int:
        """Number of objects: the largest id in the first annotation (ids are 1..N)."""
        return int(self.first_label_map(sequence).max())

    def __repr__(self) -> str:
        return f"DavisDataset({str(self.root)!r}, split={self.split!r}, sequences={len(self)})"


def _without_void(labels: np.ndarray) -> np.ndarray:
    """Copy of ``labels`` with the void label (255) replaced by background (0)."""
    labels = labels.copy()
    labels[labels == VOID_LABEL] = 0
    return labels
