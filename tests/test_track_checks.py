"""``persam track`` checks its inputs and outputs before the model is loaded (and writes nothing
when one fails): every frame of a frames folder (from its header), --video as an output file,
an --frames file that is not an image; and its help does not mention a concept it cannot take.

The checkpoint given is a path that does not exist wherever the check must come first: the
error being about the frame (or --video) proves the model was not loaded yet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from persam_files import voc_palette
from PIL import Image

from persam.cli import main

HEIGHT, WIDTH = 64, 80


def save_frame(path: Path, seed: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def save_first_mask(path: Path) -> Path:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[20:40, 30:50] = 1
    image = Image.fromarray(labels, mode="P")
    image.putpalette(voc_palette())
    image.save(path)
    return path


def track(tmp_path: Path, frames: Path, *extra: str, checkpoint: Path | None = None) -> int:
    return main(["track", "--checkpoint", str(checkpoint or tmp_path / "no_such_checkpoint.pth"),
                 "--frames", str(frames), "--first-mask", str(save_first_mask(tmp_path / "first.png")),
                 "--out", str(tmp_path / "out"), "--no-progress", *extra])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("persam track: error: "), err
    return lines[0]


def written_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    save_frame(folder / "00.png", seed=0)
    return folder


def test_frame_of_another_size_is_refused_before_the_model_loads(tmp_path, frames, capsys):
    save_frame(frames / "01.png", seed=1, size=(HEIGHT, WIDTH + 16))
    save_frame(frames / "02.png", seed=2)
    status = track(tmp_path, frames, "--video", str(tmp_path / "overlay.mp4"))
    line = one_error_line(capsys.readouterr().err)
    assert status == 1
    assert str(frames / "01.png") in line and "96x64" in line and "80x64" in line, line
    assert "checkpoint" not in line, line
    assert not written_files(tmp_path / "out") and not (tmp_path / "overlay.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "frames"]  # no temp video


def test_unreadable_frame_is_refused_before_the_model_loads(tmp_path, frames, capsys):
    (frames / "01.jpg").write_text("not a JPEG at all\n")
    status = track(tmp_path, frames)
    line = one_error_line(capsys.readouterr().err)
    assert status == 1 and str(frames / "01.jpg") in line and "checkpoint" not in line, line
    assert not written_files(tmp_path / "out")


def test_video_naming_an_existing_folder_says_it_is_a_folder(tmp_path, frames, capsys):
    save_frame(frames / "01.png", seed=1)
    existing = tmp_path / "existing"
    existing.mkdir()
    status = track(tmp_path, frames, "--video", str(existing))
    line = one_error_line(capsys.readouterr().err)
    assert status == 1 and "--video" in line and "is a folder" in line, line
    assert "mp4v" not in line and "checkpoint" not in line, line
    assert not (tmp_path / "out").exists() and not any(existing.iterdir())


def test_a_text_file_named_jpg_is_one_line_without_ffmpeg_noise(tmp_path, capfd):
    not_an_image = tmp_path / "notimg.jpg"
    not_an_image.write_text("hello\n")
    status = track(tmp_path, not_an_image)
    captured = capfd.readouterr()  # file-descriptor level: FFmpeg's log would land here too
    line = one_error_line(captured.err)
    assert status == 1 and str(not_an_image) in line and "not an image" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["track", "perseg", "bench"])
def test_method_help_does_not_mention_a_saved_concept(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "--method" in text and "persam-f" in text
    assert "concept" not in text, text


def test_frames_follow_their_numbers_not_their_spelling(tmp_path):
    from persam.commands.track import FrameSource

    for index in (1, 2, 10, 11):  # ffmpeg's unpadded %d names
        save_frame(tmp_path / f"frame{index}.jpg", index)
    assert [path.name for path in FrameSource(tmp_path).paths] == [
        "frame1.jpg", "frame2.jpg", "frame10.jpg", "frame11.jpg"]  # was frame1, frame10, frame11, frame2


def test_a_greyscale_first_mask_of_ids_is_several_objects(tmp_path):
    from persam.commands.track import read_first_mask

    ids = np.zeros((HEIGHT, WIDTH), np.uint8)
    ids[2:10, 2:10] = 1
    ids[12:20, 12:20] = 2
    Image.fromarray(ids, mode="L").save(tmp_path / "grey12.png")
    labels, palette = read_first_mask(tmp_path / "grey12.png", (HEIGHT, WIDTH))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2] and palette == voc_palette()
    # one object: 0/1, 0/255, and a soft-edged mask with many grey values
    soft = (np.linspace(0, 255, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)).astype(np.uint8)
    for name, mask in (("one.png", (ids > 0).astype(np.uint8)), ("255.png", (ids > 0).astype(np.uint8) * 255),
                       ("soft.png", soft)):
        Image.fromarray(mask, mode="L").save(tmp_path / name)
        labels, _ = read_first_mask(tmp_path / name, (HEIGHT, WIDTH))
        assert sorted(np.unique(labels).tolist()) == [0, 1], name
