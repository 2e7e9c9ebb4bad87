"""Found by trying the command line as a new user (2026-12-03, second pass): no command writes
its results over the files it reads. Each case is refused in one line before the model loads
(the checkpoint given does not exist, so an error about anything else proves the order), and
the input files are left byte for byte as they were."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam import PerSAM, build_sam
from persam.cli import main as cli


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture()
def album(tmp_path) -> Path:
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / name)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(folder / "m.png")
    return folder


@pytest.fixture(scope="module")
def concept(small_checkpoint, tmp_path_factory):
    persam = PerSAM(build_sam("auto", small_checkpoint), cache_size=0)
    image = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True
    return persam.learn(image, mask, name="red").save(tmp_path_factory.mktemp("concept") / "red.pt")


def run_refused(args, tmp_path, capsys, *fragments) -> str:
    before = {path: digest(path) for path in tmp_path.rglob("*") if path.is_file()}
    assert cli([*map(str, args), "--checkpoint", str(tmp_path / "none.pth")]) == 1
    line = error_line(capsys)
    assert "none.pth" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    after = {path: digest(path) for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before  # nothing written, nothing replaced
    return line


@pytest.mark.parametrize("command", ["segment", "find"])
def test_an_input_file_is_not_overwritten_by_its_own_result(command, album, concept, tmp_path, capsys):
    # album/a.png given as a file, --out album: its result would be album/a.png
    run_refused([command, "--concept", concept, "--out", album, album / "a.png"], tmp_path, capsys,
                f"the result of {album / 'a.png'} would be written as {album / 'a.png'}, which is an input image")


def test_an_overlay_would_not_replace_an_input(album, concept, tmp_path, capsys):
    Image.open(album / "a.png").save(album / "b_overlay.jpg")
    run_refused(["segment", "--concept", concept, "--overlay", "--out", album, album / "b.jpg",
                 album / "b_overlay.jpg"], tmp_path, capsys, "b_overlay.jpg, which is an input image")


def test_the_reference_mask_is_not_overwritten(album, tmp_path, capsys):
    # the result of album/m.jpg would be album/m.png, the --ref-mask
    Image.open(album / "a.png").convert("RGB").save(album / "m.jpg")
    run_refused(["segment", "--ref-image", album / "a.png", "--ref-mask", album / "m.png", "--out", album,
                 album / "m.jpg"], tmp_path, capsys, "which is a file this command reads")


def test_an_input_folder_inside_out_is_named_as_such(album, concept, tmp_path, capsys):
    run_refused(["segment", "--concept", concept, "--out", album, album / "sub"], tmp_path, capsys,
                f"input folder {album / 'sub'} is inside --out {album}")


def test_learn_does_not_save_over_its_reference(album, tmp_path, capsys):
    for target, flag in ((album / "a.png", "--ref-image"), (album / "m.png", "--ref-mask")):
        run_refused(["learn", "--ref-image", album / "a.png", "--ref-mask", album / "m.png", "--save", target],
                    tmp_path, capsys, f"--save {target} is the {flag} file")


@pytest.mark.parametrize("out", ["data", "data/Annotations"])
def test_perseg_out_inside_the_dataset_is_refused(out, perseg_mini, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(perseg_mini, data)
    where = "is" if out == "data" else "is inside"
    run_refused(["perseg", "--data", data, "--out", tmp_path / out], tmp_path, capsys,
                f"--out {tmp_path / out} {where} --data {data}")


def test_track_spares_its_frames_and_its_first_mask(album, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        Image.open(album / "a.png").save(frames / f"{index:05d}.png")
    run_refused(["track", "--frames", frames, "--first-mask", album / "m.png", "--out", frames],
                tmp_path, capsys, f"--out {frames} is --frames {frames}")
    run_refused(["track", "--frames", frames, "--first-mask", album / "m.png", "--out", frames / "labels"],
                tmp_path, capsys, "is inside --frames")
    run_refused(["track", "--frames", frames, "--first-mask", album / "m.png", "--out", tmp_path / "o",
                 "--video", album / "m.png"], tmp_path, capsys, "is the --first-mask file")
