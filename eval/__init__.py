"""Evaluation for persam (installed as ``persam_eval``).

* Metrics with the exact definitions of the official DAVIS-2017 toolkit:
  :func:`iou` (J), :func:`boundary_f` (F), :func:`db_statistics` (Mean/Recall/Decay).
* PerSeg: :func:`evaluate_perseg` (files) and :func:`perseg_scores` (in-memory counts),
  with the definitions of PerSAM's ``eval_miou.py``.
* Presence and instances (``find``, docs/method.md 11): :func:`auroc`, :func:`presence_counts`
  (precision / recall / F1 at a threshold), :func:`choose_threshold`, :func:`match_instances`
  and :func:`instance_counts` (matching at IoU 0.5, count accuracy).
* DAVIS-2017 semi-supervised: :func:`evaluate_davis` (files, writes the toolkit's CSVs)
  and :func:`score_sequence` (arrays).
"""
from ._files import write_json_atomic, write_text_atomic
from .davis import (
    GLOBAL_COLUMNS,
    PER_SEQUENCE_COLUMNS,
    DavisScores,
    ObjectScores,
    evaluate_davis,
    global_csv_name,
    per_sequence_csv_name,
    read_result_label_maps,
    score_sequence,
)
from .errors import PredictionError
from .presence import (MATCH_IOU, InstanceCounts, PresenceCounts, auroc, choose_threshold,
                       instance_counts, match_instances, presence_counts)
from .metrics import (
    DEFAULT_BOUND_TH,
    boundary_f,
    boundary_tolerance_px,
    db_statistics,
    disk,
    iou,
    seg_to_boundary,
)
from .perseg import (
    ImageCounts,
    PAPER_EXCLUDED_OBJECTS,
    ObjectScore,
    PerSegScores,
    evaluate_perseg,
    image_counts,
    perseg_scores,
)

__all__ = [
    "PredictionError",
    "MATCH_IOU",
    "InstanceCounts",
    "PresenceCounts",
    "auroc",
    "choose_threshold",
    "instance_counts",
    "match_instances",
    "presence_counts",
    "DEFAULT_BOUND_TH",
    "iou",
    "boundary_f",
    "boundary_tolerance_px",
    "seg_to_boundary",
    "disk",
    "db_statistics",
    "ImageCounts",
    "PAPER_EXCLUDED_OBJECTS",
    "ObjectScore",
    "PerSegScores",
    "image_counts",
    "perseg_scores",
    "evaluate_perseg",
    "ObjectScores",
    "DavisScores",
    "GLOBAL_COLUMNS",
    "PER_SEQUENCE_COLUMNS",
    "score_sequence",
    "read_result_label_maps",
    "evaluate_davis",
    "global_csv_name",
    "per_sequence_csv_name",
    "write_text_atomic",
    "write_json_atomic",
]
