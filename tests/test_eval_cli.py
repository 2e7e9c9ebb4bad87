"""End-to-end evaluation through ``persam eval`` and the persam_eval API: PerSeg on the
real perseg-mini folder, DAVIS on a synthetic DAVIS-layout folder written here."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam.cli import main
from persam_eval import PredictionError, evaluate_davis, evaluate_perseg

PERSEG_MINI = Path(__file__).resolve().parents[1] / "examples" / "perseg-mini"
OBJECTS = ("cat", "colorful_sneaker", "duck_toy")
TEST_INDICES = ("01", "02")


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [200] * (768 - 12))
    image.save(path)


def gt_mask(name: str, index: str) -> np.ndarray:
    """PerSeg ground truth read directly with PIL (palette index != 0)."""
    return np.array(Image.open(PERSEG_MINI / "Annotations" / name / f"{index}.png")) != 0


# ---------------------------------------------------------------- PerSeg


def test_perseg_gt_against_itself_is_100(tmp_path, capsys):
    out = tmp_path / "scores.json"
    status = main(["eval", "perseg", "--pred", str(PERSEG_MINI / "Annotations"),
                   "--gt", str(PERSEG_MINI), "--json", str(out)])
    assert status == 0
    scores = json.loads(out.read_text())
    assert scores["miou"] == 100.0 and scores["macc"] == 100.0 and scores["mean_image_iou"] == 100.0
    assert sorted(scores["per_object"]) == list(OBJECTS)
    assert sorted(scores["per_image"]) == [f"{o}/{i}" for o in OBJECTS for i in TEST_INDICES]
    assert "mIoU: 100.00" in capsys.readouterr().out


def test_perseg_perturbed_predictions(tmp_path):
    # cat: the ground truth with its left half cleared (palette PNG): pred is inside gt,
    #      so I = |gt right half| and U = |gt|.
    # colorful_sneaker: the whole image (white RGB PNG): I = |gt|, U = H * W.
    # duck_toy: empty (grayscale PNG): I = 0.
    pred_dir = tmp_path / "pred"
    expected_counts = {}
    for name in OBJECTS:
        for index in TEST_INDICES:
            gt = gt_mask(name, index)
            path = pred_dir / name / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == "cat":
                pred = gt.copy()
                pred[:, : gt.shape[1] // 2] = False
                save_palette_png(path, pred.astype(np.uint8))
                counts = (int(pred.sum()), int(gt.sum()), int(gt.sum()))
            elif name == "colorful_sneaker":
                Image.fromarray(np.full((*gt.shape, 3), 255, dtype=np.uint8)).save(path)
                counts = (int(gt.sum()), gt.size, int(gt.sum()))
            else:
                Image.fromarray(np.zeros(gt.shape, dtype=np.uint8), mode="L").save(path)
                counts = (0, int(gt.sum()), int(gt.sum()))
            expected_counts[f"{name}/{index}"] = counts  # (intersection, union, gt area)

    def object_ratio(name, denominator):  # sum of intersections / sum of chosen counts
        keys = [f"{name}/{i}" for i in TEST_INDICES]
        return sum(expected_counts[k][0] for k in keys) / sum(expected_counts[k][denominator] for k in keys)

    expected_iou = {name: 100 * object_ratio(name, 1) for name in OBJECTS}
    expected_acc = {name: 100 * object_ratio(name, 2) for name in OBJECTS}
    assert expected_acc["colorful_sneaker"] == 100 and expected_iou["duck_toy"] == 0

    scores = evaluate_perseg(pred_dir, PERSEG_MINI)
    for name in OBJECTS:
        assert scores.per_object[name].iou == pytest.approx(expected_iou[name])
        assert scores.per_object[name].acc == pytest.approx(expected_acc[name])
    assert scores.miou == pytest.approx(sum(expected_iou.values()) / 3)
    assert scores.macc == pytest.approx(sum(expected_acc.values()) / 3)
    per_image = {key: 100 * i / u for key, (i, u, _) in expected_counts.items()}
    assert scores.per_image == pytest.approx(per_image)
    assert scores.mean_image_iou == pytest.approx(sum(per_image.values()) / 6)
    assert 0 < scores.miou < 100


@pytest.fixture
def gt_copy_predictions(tmp_path) -> Path:
    """Predictions equal to the ground truth, in a folder the test may damage."""
    pred_dir = tmp_path / "pred"
    shutil.copytree(PERSEG_MINI / "Annotations", pred_dir)
    return pred_dir


def test_perseg_missing_prediction_is_an_error(gt_copy_predictions, capsys):
    (gt_copy_predictions / "duck_toy" / "02.png").unlink()
    status = main(["eval", "perseg", "--pred", str(gt_copy_predictions), "--gt", str(PERSEG_MINI)])
    assert status == 1
    assert "no prediction for duck_toy/02" in capsys.readouterr().err
    shutil.rmtree(gt_copy_predictions / "cat")
    with pytest.raises(PredictionError, match="no predictions for object cat"):
        evaluate_perseg(gt_copy_predictions, PERSEG_MINI)


def test_perseg_wrong_size_prediction_is_an_error(gt_copy_predictions, capsys):
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8), mode="L").save(gt_copy_predictions / "cat" / "01.png")
    status = main(["eval", "perseg", "--pred", str(gt_copy_predictions), "--gt", str(PERSEG_MINI)])
    err = capsys.readouterr().err
    assert status == 1
    assert "prediction for cat/01" in err and "12x10" in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("persam eval perseg: error: prediction for cat/01")


def test_perseg_bad_gt_layout(tmp_path, capsys):
    status = main(["eval", "perseg", "--pred", str(tmp_path), "--gt", str(PERSEG_MINI / "Annotations")])
    assert status == 1
    assert "has no Images/ folder" in capsys.readouterr().err


# ---------------------------------------------------------------- DAVIS (synthetic)

SIZE = (48, 64)  # diagonal 80 px -> boundary tolerance ceil(0.008 * 80) = 1 px


def box(y: int, x: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros(SIZE, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def make_synthetic_davis(tmp_path: Path) -> tuple[Path, Path]:
    """DAVIS folder + results folder. Split file order: beta, then alpha.

    alpha (6 frames, scored 1..4), results as palette PNGs:
      1: 8x10 box moving 2 px/frame, predicted exactly       -> J = F = 1
      2: 6x12 box moving down, predicted 1 px to the right   -> J = 11*6 / (13*6) = 11/13,
         F = 1 (the boundary moves by exactly the 1 px tolerance)
      3: 6x6 box in frames 0-3 only, never predicted         -> J = F = (0, 0, 0, 1)
         (frame 4: both empty counts 1)
      frames 0 and 5 of the results hold id 7 everywhere: not scored, must be ignored.
    beta (5 frames, scored 1..3), results as grayscale PNGs holding ids:
      1: static 8x8 box; predicted in frames 1 and 3, empty in 2 -> J = F = (1, 0, 1)
      void (255) on row 0 of frames 0 and 2: background, not an object.
    """
    davis, results = tmp_path / "DAVIS", tmp_path / "results"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("beta\nalpha\n")

    def write_frame(sequence, t, gt_labels, result_labels, result_mode):
        jpg = davis / "JPEGImages" / "480p" / sequence / f"{t:05d}.jpg"
        jpg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*SIZE, 3), 90, dtype=np.uint8)).save(jpg)
        save_palette_png(davis / "Annotations" / "480p" / sequence / f"{t:05d}.png", gt_labels)
        out = results / sequence / f"{t:05d}.png"
        if result_mode == "P":
            save_palette_png(out, result_labels)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(result_labels.astype(np.uint8), mode="L").save(out)

    for t in range(6):
        gt = np.zeros(SIZE, dtype=np.uint8)
        res = np.zeros(SIZE, dtype=np.uint8)
        gt[box(4, 2 + 2 * t, 8, 10)] = 1
        res[box(4, 2 + 2 * t, 8, 10)] = 1
        gt[box(20 + t, 30, 6, 12)] = 2
        res[box(20 + t, 31, 6, 12)] = 2
        if t < 4:
            gt[box(36, 50, 6, 6)] = 3
        if t in (0, 5):
            res[:] = 7
        write_frame("alpha", t, gt, res, "P")

    for t in range(5):
        gt = np.zeros(SIZE, dtype=np.uint8)
        gt[box(20, 20, 8, 8)] = 1
        if t in (0, 2):
            gt[0, :] = 255
        res = np.zeros(SIZE, dtype=np.uint8)
        if t != 2:
            res[box(20, 20, 8, 8)] = 1
        write_frame("beta", t, gt, res, "L")
    return davis, results


# Hand values per object: (J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay).
# Decay, 4 scored frames: mean(values[0..1]) - mean(values[2..3]); 3 frames:
# mean(values[0..1]) - values[2].
#   beta_1  J = F = (1, 0, 1):     mean 2/3, recall 2/3, decay 0.5 - 1 = -0.5
#   alpha_1 J = F = 1:             1, 1, 0
#   alpha_2 J = 11/13, F = 1:      J 11/13, 1, 0;  F 1, 1, 0
#   alpha_3 J = F = (0, 0, 0, 1):  mean 1/4, recall 1/4, decay 0 - 0.5 = -0.5
EXPECTED_OBJECTS = {
    "beta_1": (2 / 3, 2 / 3, -0.5, 2 / 3, 2 / 3, -0.5),
    "alpha_1": (1.0, 1.0, 0.0, 1.0, 1.0, 0.0),
    "alpha_2": (11 / 13, 1.0, 0.0, 1.0, 1.0, 0.0),
    "alpha_3": (0.25, 0.25, -0.5, 0.25, 0.25, -0.5),
}


def expected_global() -> list[float]:
    columns = list(zip(*EXPECTED_OBJECTS.values()))
    j_mean, j_recall, j_decay, f_mean, f_recall, f_decay = (sum(c) / len(c) for c in columns)
    return [(j_mean + f_mean) / 2, j_mean, j_recall, j_decay, f_mean, f_recall, f_decay]


def test_davis_end_to_end_cli(tmp_path, capsys):
    davis, results = make_synthetic_davis(tmp_path)
    json_path = tmp_path / "davis.json"
    status = main(["eval", "davis", "--results", str(results), "--davis", str(davis), "--json", str(json_path)])
    assert status == 0

    # The toolkit's files: pandas to_csv(index=False, float_format="%.3f").
    global_csv = (results / "global_results-val.csv").read_text()
    assert global_csv == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        + ",".join("%.3f" % v for v in expected_global()) + "\n"
    )
    # J-Mean = (2/3 + 1 + 11/13 + 1/4) / 4 = 0.6907..., J-Decay = (-0.5 + 0 + 0 - 0.5) / 4.
    assert global_csv.splitlines()[1].startswith("0.710,0.691,0.729,-0.250,0.729,0.729,-0.250")
    assert (results / "per-sequence_results-val.csv").read_text() == (
        "Sequence,J-Mean,F-Mean\n"
        "beta_1,0.667,0.667\n"
        "alpha_1,1.000,1.000\n"
        "alpha_2,0.846,1.000\n"
        "alpha_3,0.250,0.250\n"
    )
    # Nothing else (no leftover temp files) next to the sequence folders.
    assert sorted(p.name for p in results.iterdir() if p.is_file()) == [
        "global_results-val.csv", "per-sequence_results-val.csv"]

    data = json.loads(json_path.read_text())
    assert list(data["per_object"]) == list(EXPECTED_OBJECTS)
    for name, values in EXPECTED_OBJECTS.items():
        got = data["per_object"][name]
        keys = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
        assert [got[k] for k in keys] == pytest.approx(values), name
    assert data["global"]["J&F-Mean"] == pytest.approx(expected_global()[0])
    out = capsys.readouterr().out
    assert "Global results for val" in out and "alpha_2" in out


def test_davis_api_without_csv(tmp_path):
    davis, results = make_synthetic_davis(tmp_path)
    scores = evaluate_davis(results, davis, write_csv=False, progress=False)
    assert not (results / "global_results-val.csv").exists()
    assert [obj.name for obj in scores.objects] == list(EXPECTED_OBJECTS)
    assert scores.objects[2].j_per_frame.tolist() == pytest.approx([11 / 13] * 4)
    assert scores.jf_mean == pytest.approx(expected_global()[0])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "alpha" / "00003.png").unlink(), r"no result for sequence alpha frame 00003"),
        (lambda r: shutil.rmtree(r / "beta"), r"no results for sequence beta"),
        (
            lambda r: save_palette_png(r / "beta" / "00002.png", np.zeros((48, 63), dtype=np.uint8)),
            r"sequence beta frame 00002 .* is 63x48 but the ground truth is 64x48",
        ),
        (
            lambda r: save_palette_png(r / "alpha" / "00001.png", np.full(SIZE, 4, dtype=np.uint8)),
            r"sequence alpha frame 00001 contains object id 4 but the ground truth has 3",
        ),
        (
            lambda r: Image.fromarray(np.full((*SIZE, 3), 255, dtype=np.uint8)).save(r / "alpha" / "00002.png"),
            r"sequence alpha frame 00002: .*RGB",
        ),
    ],
)
def test_davis_bad_results_are_named(tmp_path, capsys, damage, message):
    davis, results = make_synthetic_davis(tmp_path)
    damage(results)
    with pytest.raises(PredictionError, match=message):
        evaluate_davis(results, davis, progress=False)
    assert not (results / "global_results-val.csv").exists()  # nothing written on failure
    status = main(["eval", "davis", "--results", str(results), "--davis", str(davis)])
    assert status == 1
    assert "persam eval davis: error:" in capsys.readouterr().err


def test_davis_bad_layout(tmp_path, capsys):
    davis, results = make_synthetic_davis(tmp_path)
    status = main(["eval", "davis", "--results", str(results), "--davis", str(davis), "--set", "train"])
    assert status == 1
    assert "no ImageSets/2017/train.txt" in capsys.readouterr().err
