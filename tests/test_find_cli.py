"""``persam find``, ``calibrate`` and ``eval presence|instances`` end to end on a seeded random
checkpoint (the real decoder; random weights say nothing about accuracy) and generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from find_data import make_perseg
from persam import Concept, PerSAM, build_sam
from persam.cli import main as cli
from persam_datasets import make_multi_instance
from persam_files import read_label_map


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_perseg(tmp_path_factory.mktemp("perseg"), images_per_object=3)


def reference(folder):
    return (str(folder / "Images" / "blue_box" / "00.jpg"), str(folder / "Annotations" / "blue_box" / "00.png"))


def run_find(checkpoint, folder, out, *extra):
    ref_image, ref_mask = reference(folder)
    return cli(["find", "--checkpoint", str(checkpoint), "--ref-image", ref_image, "--ref-mask", ref_mask,
                "--max-instances", "2", "--out", str(out), *extra, str(folder / "Images" / "green_disc")])


def read_rows(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_find_thresholds_files_and_api_agree(small_checkpoint, folder, tmp_path):
    assert run_find(small_checkpoint, folder, tmp_path / "none", "--threshold", "1e9") == 0
    rows = read_rows(tmp_path / "none")
    assert len(rows) == 3
    absent_scores = {row["image"]: row["score"] for row in rows}  # how near each came
    for row in rows:
        assert row["present"] is False and row["instances"] == []
        assert not read_label_map(tmp_path / "none" / (row["image"].rsplit("/", 1)[-1][:-4] + ".png")).any()

    out = tmp_path / "all"
    assert run_find(small_checkpoint, folder, out, "--threshold=-1e9", "--overlay") == 0
    rows = read_rows(out)
    persam = PerSAM(build_sam("auto", small_checkpoint))
    ref_image, ref_mask = reference(folder)
    concept = persam.learn(ref_image, ref_mask)
    for row in rows:
        stem = row["image"].rsplit("/", 1)[-1][:-4]
        assert row["present"] is True and 1 <= len(row["instances"]) <= 2
        assert set(row) == {"image", "present", "score", "instances"}
        assert row["score"] == row["instances"][0]["score"] == absent_scores[row["image"]]
        labels = read_label_map(out / f"{stem}.png")
        assert (out / f"{stem}_overlay.jpg").is_file()
        assert sorted(int(v) for v in np.unique(labels) if v) == list(range(1, len(row["instances"]) + 1))
        detection = persam.find(row["image"], concept, threshold=-1e9, max_instances=2)
        assert [i.to_dict() for i in detection.instances] == row["instances"]
        np.testing.assert_array_equal(labels, detection.label_map())
        for index, instance in enumerate(detection.instances, start=1):
            ys, xs = np.nonzero(labels == index)
            x0, y0, x1, y1 = row["instances"][index - 1]["box"]
            assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
            assert len(xs) <= row["instances"][index - 1]["area"] == instance.area
            for other in detection.instances[index:]:
                assert np.count_nonzero(instance.mask & other.mask) <= 0.5 * min(instance.area, other.area)


def test_find_errors_are_one_line(small_checkpoint, folder, tmp_path, capsys):
    # A bad number is an argument error, as for every command: one line, exit status 2, no work.
    with pytest.raises(SystemExit) as stop:
        run_find(small_checkpoint, folder, tmp_path / "x", "--max-instances", "0")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-instances: must be at least 1" in err[0]
    assert not (tmp_path / "x").exists()


def test_calibrate_stores_the_threshold_that_find_then_uses(small_checkpoint, folder, tmp_path, capsys):
    ref_image, ref_mask = reference(folder)
    concept_path = tmp_path / "box.pt"
    assert cli(["learn", "--checkpoint", str(small_checkpoint), "--ref-image", ref_image, "--ref-mask", ref_mask,
                "--save", str(concept_path)]) == 0
    saved = tmp_path / "box_calibrated.pt"
    assert cli(["calibrate", "--checkpoint", str(small_checkpoint), "--concept", str(concept_path),
                "--positives", str(folder / "Images" / "blue_box"), "--negatives", str(folder / "Images" / "green_disc"),
                "--max-instances", "2", "--save", str(saved)]) == 0
    calibration = Concept.load(saved).calibration
    assert calibration is not None and (calibration.n_pos, calibration.n_neg) == (3, 3)
    assert 0.0 <= calibration.auroc <= 1.0 and Concept.load(concept_path).calibration is None
    capsys.readouterr()
    out = tmp_path / "found"
    assert cli(["find", "--checkpoint", str(small_checkpoint), "--concept", str(saved), "--max-instances", "2",
                "--out", str(out), str(folder / "Images" / "green_disc")]) == 0
    assert f"threshold {calibration.threshold:.4g}" in capsys.readouterr().out
    for row in read_rows(out):
        assert row["present"] == (row["score"] >= calibration.threshold)


def test_eval_presence_prints_per_object_auroc_and_the_mean(small_checkpoint, folder, tmp_path, capsys):
    report = tmp_path / "presence.json"
    assert cli(["eval", "presence", "--checkpoint", str(small_checkpoint), "--data", str(folder),
                "--max-instances", "2", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert set(data["per_object"]) == {"blue_box", "green_disc"}
    for row in data["per_object"].values():
        assert 0.0 <= row["auroc"] <= 1.0 and (row["positives"], row["negatives"]) == (2, 2)
    assert f"mean AUROC: {data['mean_auroc']:.4f}" in printed
    assert np.array(data["scores"]).shape == (4, 2)


def test_eval_instances_on_generated_images(small_checkpoint, folder, tmp_path, capsys):
    generated = tmp_path / "multi"
    make_multi_instance(folder, generated, seed=0, images_per_object=4)
    report = tmp_path / "instances.json"
    assert cli(["eval", "instances", "--checkpoint", str(small_checkpoint), "--data", str(generated),
                "--threshold=-1e9", "--max-instances", "2", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    total = data["total"]
    assert total["images"] == 8
    # every image gets at least one instance at this threshold, and there are 2+2+... truths
    assert total["tp"] + total["fp"] >= 8
    assert total["tp"] + total["fn"] == 2 * (0 + 1 + 2 + 3)
    assert "count accuracy" in capsys.readouterr().out


def test_bench_has_a_find_row(small_checkpoint, folder, tmp_path, capsys):
    report_file = tmp_path / "bench.json"
    assert cli(["bench", "--checkpoint", str(small_checkpoint), "--data", str(folder), "--objects", "1",
                "--find-candidates", "3", "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    find = report["find"]
    assert report["encoder_passes"] == 3  # find reuses each image's embedding
    assert find["max_candidates"] == 3 and 1 <= find["candidates_mean"] <= 3
    assert 1 <= find["refined_mean"] <= find["candidates_mean"]
    assert find["find_over_segment"] == pytest.approx(find["find_s"] / report["segment_after_encoder_s"], rel=1e-2)
    printed = capsys.readouterr().out
    assert "find (3 candidates)" in printed and "find / segment after the encoder:" in printed
