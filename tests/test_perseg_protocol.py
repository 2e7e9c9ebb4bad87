"""PerSeg mIoU follows the paper's eval_miou.py protocol: it skips eight named objects."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from persam.cli import main as cli
from persam_eval import PAPER_EXCLUDED_OBJECTS, PredictionError, evaluate_perseg


def write_object(root, pred, name, masks, predictions):
    (root / "Images" / name).mkdir(parents=True)
    (root / "Annotations" / name).mkdir(parents=True)
    for index, (mask, prediction) in enumerate(zip(masks, predictions)):
        key = f"{index:02d}"
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "Images" / name / f"{key}.jpg")
        Image.fromarray(mask.astype(np.uint8)).save(root / "Annotations" / name / f"{key}.png")
        if prediction is not None:
            (pred / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(prediction.astype(np.uint8) * 255).save(pred / name / f"{key}.png")


@pytest.fixture()
def folders(tmp_path):
    root, pred = tmp_path / "perseg", tmp_path / "pred"
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True  # 16 pixels
    half = np.zeros((8, 8), bool)
    half[2:6, 2:4] = True  # 8 of them: IoU 0.5
    write_object(root, pred, "dog", [gt, gt, gt], [None, gt, half])  # IoU = (16+8)/(16+16) = 75%
    write_object(root, pred, "clock", [gt, gt], [None, half])  # IoU 50%, excluded by the paper
    return root, pred


def test_default_skips_the_papers_objects(folders):
    root, pred = folders
    assert "clock" in PAPER_EXCLUDED_OBJECTS
    scores = evaluate_perseg(pred, root)
    assert scores.miou == pytest.approx(75.0)
    assert list(scores.per_object) == ["dog"] and scores.excluded == ("clock",)
    every = evaluate_perseg(pred, root, exclude=())
    assert every.miou == pytest.approx((75.0 + 50.0) / 2)


def test_skipped_objects_need_no_predictions(folders):
    root, pred = folders
    for path in (pred / "clock").iterdir():
        path.unlink()
    (pred / "clock").rmdir()
    assert evaluate_perseg(pred, root).miou == pytest.approx(75.0)
    with pytest.raises(PredictionError, match="clock"):
        evaluate_perseg(pred, root, exclude=())


def test_cli_all_objects(folders, tmp_path):
    root, pred = folders
    out = tmp_path / "scores.json"
    assert cli(["eval", "perseg", "--pred", str(pred), "--gt", str(root), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["excluded_objects"] == ["clock"]
    assert cli(["eval", "perseg", "--pred", str(pred), "--gt", str(root), "--all-objects",
                "--json", str(out)]) == 0
    assert json.loads(out.read_text())["miou"] == pytest.approx(62.5)
