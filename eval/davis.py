"""DAVIS-2017 semi-supervised evaluation, reproducing the official ``davis2017-evaluation``.

Protocol, per sequence with T annotated frames:

* Ground truth: label maps with void (255) set to 0; objects are ids 1..N with
  N = max id of the first frame. Results: label maps ``RESULTS/<sequence>/<frame>.png``
  (palette or grayscale PNG, pixel value = object id).
* Only frames 1..T-2 are scored (the first frame is the given annotation, the toolkit
  drops the last one too). A result id above N is an error; an id never predicted is an
  empty mask.
* Per object: J (:func:`~persam_eval.metrics.iou`) and F
  (:func:`~persam_eval.metrics.boundary_f`) per frame, then Mean / Recall / Decay of each
  (:func:`~persam_eval.metrics.db_statistics`). The object is named ``<sequence>_<id>``.
* Global: each column is the mean over all objects (not over sequences);
  J&F-Mean = (J-Mean + F-Mean) / 2.

The CSV files are byte-identical to those the toolkit writes with pandas
(``float_format="%.3f"``, no index, ``\\n`` line ends).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from persam_datasets import DavisDataset, ImageReadError, read_label_map

from ._files import write_text_atomic
from .errors import PredictionError
from .metrics import DEFAULT_BOUND_TH, boundary_f, db_statistics, iou

__all__ = [
    "GLOBAL_COLUMNS",
    "PER_SEQUENCE_COLUMNS",
    "ObjectScores",
    "DavisScores",
    "score_sequence",
    "read_result_label_maps",
    "evaluate_davis",
    "global_csv_name",
    "per_sequence_csv_name",
]

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def global_csv_name(split: str) -> str:
    """File name of the toolkit's global table, e.g. ``global_results-val.csv``."""
    return f"global_results-{split}.csv"


def per_sequence_csv_name(split: str) -> str:
    """File name of the toolkit's per-object table, e.g. ``per-sequence_results-val.csv``."""
    return f"per-sequence_results-{split}.csv"


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame J and F of one object (frames 1..T-2) and their statistics."""

    sequence: str
    object_id: int
    j_per_frame: np.ndarray
    f_per_frame: np.ndarray
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float

    @property
    def name(self) -> str:
        """``<sequence>_<object id>``, the toolkit's row name (e.g. ``bike-packing_1``)."""
        return f"{self.sequence}_{self.object_id}"

    def to_dict(self) -> dict:
        return {
            "sequence": self.sequence,
            "object_id": self.object_id,
            "J-Mean": self.j_mean,
            "J-Recall": self.j_recall,
            "J-Decay": self.j_decay,
            "F-Mean": self.f_mean,
            "F-Recall": self.f_recall,
            "F-Decay": self.f_decay,
        }


def _format_csv_cell(value: object) -> str:
    # pandas to_csv(float_format="%.3f"): floats via "%.3f", NaN as an empty field.
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    return "" if math.isnan(number) else "%.3f" % number


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # QUOTE_MINIMAL, as pandas
    writer.writerow(header)
    for row in rows:
        writer.writerow([_format_csv_cell(value) for value in row])
    return buffer.getvalue()


def _format_text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header)] + [
        [value if isinstance(value, str) else f"{float(value):.3f}" for value in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells
    )


@dataclass
class DavisScores:
    """Results of a DAVIS evaluation: one :class:`ObjectScores` per object, in order."""

    split: str
    objects: list[ObjectScores]

    def global_row(self) -> dict[str, float]:
        """The toolkit's global table: means over objects, in ``GLOBAL_COLUMNS`` order."""
        if not self.objects:
            return {column: math.nan for column in GLOBAL_COLUMNS}

        def mean_of(attribute: str) -> float:
            return float(np.mean([getattr(obj, attribute) for obj in self.objects]))

        j_mean, f_mean = mean_of("j_mean"), mean_of("f_mean")
        return {
            "J&F-Mean": (j_mean + f_mean) / 2.0,
            "J-Mean": j_mean,
            "J-Recall": mean_of("j_recall"),
            "J-Decay": mean_of("j_decay"),
            "F-Mean": f_mean,
            "F-Recall": mean_of("f_recall"),
            "F-Decay": mean_of("f_decay"),
        }

    @property
    def jf_mean(self) -> float:
        return self.global_row()["J&F-Mean"]

    def per_sequence_rows(self) -> list[tuple[str, float, float]]:
        """(``<sequence>_<id>``, J-Mean, F-Mean) per object: the toolkit's per-sequence table."""
        return [(obj.name, obj.j_mean, obj.f_mean) for obj in self.objects]

    def global_csv_text(self) -> str:
        row = self.global_row()
        return _csv_text(GLOBAL_COLUMNS, [[row[column] for column in GLOBAL_COLUMNS]])

    def per_sequence_csv_text(self) -> str:
        return _csv_text(PER_SEQUENCE_COLUMNS, self.per_sequence_rows())

    def write_csv(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv``
        into ``directory`` (each via a temp file + rename); return their paths."""
        directory = Path(directory)
        global_path = write_text_atomic(directory / global_csv_name(self.split), self.global_csv_text())
        per_sequence_path = write_text_atomic(
            directory / per_sequence_csv_name(self.split), self.per_sequence_csv_text()
        )
        return global_path, per_sequence_path

    def to_dict(self) -> dict:
        """Plain-JSON form: ``split``, ``global`` (the global table) and ``per_object``."""
        return {
            "split": self.split,
            "num_objects": len(self.objects),
            "num_sequences": len({obj.sequence for obj in self.objects}),
            "global": self.global_row(),
            "per_object": {obj.name: obj.to_dict() for obj in self.objects},
        }

    def format_table(self) -> str:
        """The global and per-sequence tables as aligned text (three decimals)."""
        row = self.global_row()
        return "\n".join(
            [
                f"--------------------------- Global results for {self.split} ---------------------------",
                _format_text_table(GLOBAL_COLUMNS, [[row[column] for column in GLOBAL_COLUMNS]]),
                "",
                f"---------- Per sequence results for {self.split} ----------",
                _format_text_table(PER_SEQUENCE_COLUMNS, self.per_sequence_rows()),
                "",
                "(scores are fractions of 1, as the official DAVIS toolkit prints them)",
            ]
        )


def _frame_label(frame_names: Sequence[str] | None, t: int) -> str:
    return frame_names[t] if frame_names is not None else str(t)


def score_sequence(
    sequence: str,
    gt_label_maps: np.ndarray,
    result_label_maps: np.ndarray,
    frame_names: Sequence[str] | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
) -> list[ObjectScores]:
    """Score one sequence; both arrays are (T, H, W) label maps over all T frames.

    Ground-truth void (255) must already be 0 (as :meth:`DavisDataset.label_maps`
    returns). Frames 0 and T-1 of both arrays are ignored. Returns one ObjectScores per
    object id 1..N, N = max id of ``gt_label_maps[0]`` (empty list if N = 0).
    Raises PredictionError (naming sequence and frame) when a scored result frame has an
    id above N, and ValueError when the shapes differ or T < 3.
    """
    gt = np.asarray(gt_label_maps)
    res = np.asarray(result_label_maps)
    if gt.ndim != 3:
        raise ValueError(f"ground truth of sequence {sequence} must be (T, H, W), got shape {gt.shape}")
    if res.shape != gt.shape:
        raise PredictionError(
            f"results of sequence {sequence} have shape {res.shape} (T, H, W) but the ground truth has {gt.shape}"
        )
    num_frames = gt.shape[0]
    if num_frames < 3:
        raise ValueError(
            f"sequence {sequence} has {num_frames} annotated frames; the DAVIS protocol scores frames "
            "1..T-2 (first and last excluded), so it needs at least 3"
        )
    num_objects = int(gt[0].max())
    scored = range(1, num_frames - 1)
    for t in scored:
        highest = int(res[t].max())
        if highest > num_objects:
            raise PredictionError(
                f"result for sequence {sequence} frame {_frame_label(frame_names, t)} contains object id "
                f"{highest} but the ground truth has {num_objects} object(s)"
                + (" (0/255 masks are not label maps: write object ids)" if highest == 255 else "")
            )

    scores = []
    for object_id in range(1, num_objects + 1):
        j_values = np.array([iou(res[t] == object_id, gt[t] == object_id) for t in scored])
        f_values = np.array(
            [boundary_f(res[t] == object_id, gt[t] == object_id, bound_th=bound_th) for t in scored]
        )
        j_mean, j_recall, j_decay = db_statistics(j_values)
        f_mean, f_recall, f_decay = db_statistics(f_values)
        scores.append(
            ObjectScores(
                sequence, object_id, j_values, f_values, j_mean, j_recall, j_decay, f_mean, f_recall, f_decay
            )
        )
    return scores


def read_result_label_maps(
    results_dir: str | os.PathLike,
    sequence: str,
    frame_names: Sequence[str],
    frame_shape: tuple[int, int],
) -> np.ndarray:
    """Read ``results_dir/<sequence>/<frame>.png`` for frames 1..T-2 into a (T, H, W) uint8
    array (frames 0 and T-1, which are not scored, stay 0).

    Raises PredictionError naming the sequence and frame if a result is missing,
    unreadable, not a label map, or not of size ``frame_shape`` (H, W).
    """
    sequence_dir = Path(results_dir) / sequence
    if not sequence_dir.is_dir():
        raise PredictionError(f"no results for sequence {sequence}: expected folder {sequence_dir}")
    stack = np.zeros((len(frame_names), *frame_shape), dtype=np.uint8)
    for t in range(1, len(frame_names) - 1):
        path = sequence_dir / f"{frame_names[t]}.png"
        if not path.is_file():
            raise PredictionError(f"no result for sequence {sequence} frame {frame_names[t]}: expected {path}")
        try:
            labels = read_label_map(path)
        except ImageReadError as exc:
            raise PredictionError(f"result for sequence {sequence} frame {frame_names[t]}: {exc}") from None
        if labels.shape != tuple(frame_shape):
            raise PredictionError(
                f"result for sequence {sequence} frame {frame_names[t]} ({path}) is "
                f"{labels.shape[1]}x{labels.shape[0]} but the ground truth is "
                f"{frame_shape[1]}x{frame_shape[0]} (width x height)"
            )
        stack[t] = labels
    return stack


def evaluate_davis(
    results_dir: str | os.PathLike,
    davis_root: str | os.PathLike,
    split: str = "val",
    write_csv: bool = True,
    progress: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
) -> DavisScores:
    """Evaluate the results folder on every sequence of ``split`` (semi-supervised task).

    ``results_dir/<sequence>/<frame>.png`` must exist for frames 1..T-2 of every sequence.
    With ``write_csv`` the toolkit's two CSV tables are written into ``results_dir``.
    A tqdm bar over sequences is shown when ``progress`` is true.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise PredictionError(f"results folder {results_dir} does not exist")
    dataset = DavisDataset(davis_root, split=split)
    objects: list[ObjectScores] = []
    for sequence in tqdm(dataset.sequences, desc=f"DAVIS {split}", unit="seq", disable=not progress):
        frame_names = dataset.frame_names(sequence)
        gt = dataset.label_maps(sequence)
        if gt.shape[0] < 3:
            raise ValueError(
                f"sequence {sequence} of {dataset.root} has {gt.shape[0]} frames; the DAVIS protocol "
                "scores frames 1..T-2, so it needs at least 3"
            )
        res = read_result_label_maps(results_dir, sequence, frame_names, gt.shape[1:])
        objects.extend(score_sequence(sequence, gt, res, frame_names, bound_th=bound_th))
    if not objects:
        raise ValueError(f"no objects to evaluate: the first annotations of the {split!r} split are all empty")
    scores = DavisScores(split=split, objects=objects)
    if write_csv:
        scores.write_csv(results_dir)
    return scores
