"""Found by trying the command line as a new user (2026-12-03): outputs that cannot be written
are refused before any work, in one line naming the option; a writer's error names the file
asked for, not its temp file; ``find`` never leaves an earlier run's results behind; ``search``
refuses images too small to segment as it refuses unreadable ones; settings that cannot apply
are refused (a NaN threshold, Ray options without ``--ray``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam import PerSAM, build_sam
from persam.cli import main as cli
from persam.search import ERRORS_FILE, RESULTS_FILE, read_jsonl, search
from persam_files import write_bytes

# A folder no file can be made in, even by root (permission bits do not stop root).
UNWRITABLE = Path("/proc/persam-no-such-folder")
needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc (Linux)")


@pytest.fixture(scope="module")
def concept(small_checkpoint, tmp_path_factory):
    persam = PerSAM(build_sam("auto", small_checkpoint), cache_size=0)
    image = np.full((64, 64, 3), 120, np.uint8)
    image[20:44, 20:44] = (220, 30, 30)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True
    return persam.learn(image, mask, name="red").save(tmp_path_factory.mktemp("concept") / "red.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(folder / "big.png")
    Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(folder / "tiny.png")
    return folder


def error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@needs_proc
@pytest.mark.parametrize("command", [
    ["segment", "--ref-image", "{photo}", "--ref-mask", "{photo}", "--out", "{bad}", "{photo}"],
    ["find", "--concept", "{concept}", "--out", "{bad}", "{photo}"],
    ["learn", "--ref-image", "{photo}", "--ref-mask", "{photo}", "--save", "{bad}/c.pt"],
    ["calibrate", "--concept", "{concept}", "--positives", "{photo}", "--negatives", "{photo}",
     "--save", "{bad}.pt"],
    ["search", "--concept", "{concept}", "--out", "{bad}", "{photo}"],
    ["search", "--concept", "{concept}", "--out", "{out}", "--index", "{bad}", "{photo}"],
])
def test_unwritable_outputs_are_refused_before_the_model_loads(command, concept, photos, tmp_path, capsys):
    # The checkpoint does not exist: had the model been loaded first, the error would be about it.
    values = {"photo": photos / "big.png", "concept": concept, "bad": UNWRITABLE, "out": tmp_path / "out"}
    args = [part.format(**values) for part in command] + ["--checkpoint", str(tmp_path / "none.pth")]
    assert cli(args) == 1
    line = error_line(capsys)
    assert f"cannot write in {UNWRITABLE.parent}" in line and str(UNWRITABLE) in line, line
    assert "none.pth" not in line
    assert not (tmp_path / "out").exists()


@needs_proc
def test_a_writer_names_the_file_asked_for_not_its_temp_file():
    target = UNWRITABLE / "result.png"
    with pytest.raises(OSError) as caught:
        write_bytes(target, b"x")
    assert caught.value.filename == str(target)
    target = UNWRITABLE.parent / "result.png"  # /proc exists; no file can be made in it
    with pytest.raises(OSError) as caught:
        write_bytes(target, b"x")
    assert caught.value.filename == str(target) and ".tmp" not in str(caught.value)


def test_find_where_every_image_fails_leaves_no_earlier_results(small_checkpoint, concept, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["find", "--checkpoint", str(small_checkpoint), "--concept", str(concept), "--threshold", "0",
                "--out", str(out), "--no-progress", str(photos / "big.png")]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    status = cli(["find", "--checkpoint", str(small_checkpoint), "--concept", str(concept),
                  "--out", str(out), "--no-progress", str(photos / "tiny.png")])
    assert status == 1 and "tiny.png" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == ""  # not the earlier run's row for big.png


def test_find_reports_how_near_an_absent_image_came(small_checkpoint, concept, photos, tmp_path):
    rows = {}
    for threshold in ("0", "inf"):
        out = tmp_path / threshold
        assert cli(["find", "--checkpoint", str(small_checkpoint), "--concept", str(concept), "--threshold",
                    threshold, "--out", str(out), "--no-progress", str(photos / "big.png")]) == 0
        rows[threshold] = json.loads((out / "results.jsonl").read_text())
    assert rows["0"]["present"] and not rows["inf"]["present"] and rows["inf"]["instances"] == []
    assert rows["inf"]["score"] == rows["0"]["score"] == rows["0"]["instances"][0]["score"] > 0


def test_search_refuses_images_too_small_to_segment(small_checkpoint, concept, photos, tmp_path):
    summary = search([photos], [concept], tmp_path / "out", checkpoint=small_checkpoint)
    assert [row["image"] for row in read_jsonl(tmp_path / "out" / RESULTS_FILE)] == [str(photos / "big.png")]
    errors = read_jsonl(tmp_path / "out" / ERRORS_FILE)
    assert [row["image"] for row in errors] == [str(photos / "tiny.png")]
    assert "12x10" in errors[0]["error"] and "at least 16" in errors[0]["error"]
    assert summary.text().splitlines()[0].startswith("2 files: 1 searched, 1 could not be used")


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "nan"], "must be a number, not NaN"),
    (["--ray-actors", "3"], "--ray-actors only apply to a Ray run: add --ray"),
    (["--ray-cpus", "2", "--ray-gpus", "1"], "--ray-cpus, --ray-gpus only apply to a Ray run"),
    (["--ray", "--ray-actors", "0"], "must be at least 1"),
])
def test_search_settings_that_cannot_apply_are_refused(extra, message, concept, photos, tmp_path, capsys):
    args = ["search", "--checkpoint", str(tmp_path / "none.pth"), "--concept", str(concept),
            "--out", str(tmp_path / "out"), str(photos), *extra]
    try:
        status = cli(args)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    assert status in (1, 2) and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--objects", "--find-candidates"])
def test_bench_counts_are_not_negative(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(["bench", "--data", str(tmp_path), flag, "-1"])
    assert stop.value.code == 2 and f"argument {flag}: must be 0 or more, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after", "nowhere"])
def test_debug_before_or_after_the_command(where, concept, photos, tmp_path, capsys):
    command = ["segment", "--checkpoint", str(tmp_path / "none.pth"), "--concept", str(concept),
               "--out", str(tmp_path / "out"), str(photos / "big.png")]
    args = {"before": ["--debug", *command], "after": [*command, "--debug"], "nowhere": command}[where]
    if where == "nowhere":
        assert cli(args) == 1 and "none.pth not found" in error_line(capsys)
    else:
        with pytest.raises(Exception, match="none.pth not found"):  # the traceback, not one line
            cli(args)


def test_negative_coordinates_are_values_not_options():
    from persam.cli import build_parser

    args = build_parser().parse_args(["learn", "--ref-image", "a.jpg", "--ref-point", "-5,10",
                                      "--ref-box", "-1.5,-2,30,40", "--save", "c.pt"])
    assert args.ref_point == [(-5.0, 10.0)] and args.ref_box == (-1.5, -2.0, 30.0, 40.0)


@pytest.mark.parametrize("command, takes_concept", [
    (["segment"], True), (["find"], True), (["learn"], False), (["davis"], False),
    (["eval", "presence"], False), (["eval", "instances"], False), (["app"], False),
])
def test_method_help_names_a_saved_concept_only_where_one_is_taken(command, takes_concept, capsys):
    with pytest.raises(SystemExit) as exited:
        cli([*command, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "--method" in text
    assert ("with a saved concept, the concept's method is used" in text) == takes_concept
