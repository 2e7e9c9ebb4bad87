"""README: bad input gets a one-line error naming the file and the problem, exit status 1, no
traceback, and nothing written is lost or half-written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from persam.cli import main as cli


@pytest.fixture()
def pair(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 255
    Image.fromarray(image).save(tmp_path / "ref.jpg")
    Image.fromarray(mask).save(tmp_path / "ref.png")
    Image.fromarray(image[::-1]).save(tmp_path / "test.jpg")
    return tmp_path / "ref.jpg", tmp_path / "ref.png", tmp_path / "test.jpg"


def segment(checkpoint, ref_image, ref_mask, out, *inputs, extra=()):
    return cli(["segment", "--checkpoint", str(checkpoint), "--ref-image", str(ref_image),
                "--ref-mask", str(ref_mask), "--out", str(out), *extra, *map(str, inputs)])


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    message = err[-1]
    assert message.startswith("persam ") and "error:" in message, message
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_input_image(small_checkpoint, pair, tmp_path, capsys):
    ref_image, ref_mask, _ = pair
    assert segment(small_checkpoint, ref_image, ref_mask, tmp_path / "o", tmp_path / "nope.jpg") == 1
    one_line_error(capsys, "nope.jpg", "not found")


def test_not_an_image(small_checkpoint, pair, tmp_path, capsys):
    ref_image, ref_mask, _ = pair
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture")
    assert segment(small_checkpoint, fake, ref_mask, tmp_path / "o", pair[2]) == 1
    one_line_error(capsys, "notes.jpg", "not an image")


def test_mask_size_differs_from_image(small_checkpoint, pair, tmp_path, capsys):
    ref_image, _, test = pair
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(tmp_path / "small.png")
    assert segment(small_checkpoint, ref_image, tmp_path / "small.png", tmp_path / "o", test) == 1
    one_line_error(capsys, "small.png", "100x100", "160x120")


def test_empty_mask(small_checkpoint, pair, tmp_path, capsys):
    ref_image, _, test = pair
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(tmp_path / "empty.png")
    assert segment(small_checkpoint, ref_image, tmp_path / "empty.png", tmp_path / "o", test) == 1
    one_line_error(capsys, "empty.png", "empty")


def test_mask_too_small_for_the_feature_grid(small_checkpoint, pair, tmp_path, capsys):
    ref_image, _, test = pair
    tiny = np.zeros((120, 160), np.uint8)
    tiny[60, 80] = 255
    Image.fromarray(tiny).save(tmp_path / "tiny.png")
    assert segment(small_checkpoint, ref_image, tmp_path / "tiny.png", tmp_path / "o", test) == 1
    one_line_error(capsys, "tiny.png", "mask too small, thin or scattered", "1 object pixel,")


def test_empty_input_folder(small_checkpoint, pair, tmp_path, capsys):
    ref_image, ref_mask, _ = pair
    (tmp_path / "nothing").mkdir()
    assert segment(small_checkpoint, ref_image, ref_mask, tmp_path / "o", tmp_path / "nothing") == 1
    one_line_error(capsys, "nothing", "contains no images")


@pytest.mark.parametrize("kind", ["missing", "truncated", "not_checkpoint", "code", "wrong_type"])
def test_bad_checkpoints(small_checkpoint, pair, tmp_path, capsys, kind):
    ref_image, ref_mask, test = pair
    path = tmp_path / "bad.pth"
    extra = ()
    if kind == "truncated":
        data = small_checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_checkpoint":
        path.write_bytes(b"hello, not a checkpoint at all" * 10)
    elif kind == "code":
        torch.save({"weights": torch.zeros(2), "payload": RunsCode()}, path)
    elif kind == "wrong_type":
        path = small_checkpoint
        extra = ("--model", "vit_t")
    assert segment(path, ref_image, ref_mask, tmp_path / "o", test, extra=extra) == 1
    expected = {"missing": "not found", "truncated": "truncated", "not_checkpoint": "not a PyTorch checkpoint",
                "code": "refused", "wrong_type": "is a custom checkpoint, not vit_t"}[kind]
    one_line_error(capsys, str(path.name), expected)


class RunsCode:
    def __reduce__(self):
        return (print, ("this would have run at load time",))


def test_cuda_asked_but_absent(small_checkpoint, pair, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ref_image, ref_mask, test = pair
    assert segment(small_checkpoint, ref_image, ref_mask, tmp_path / "o", test, extra=("--device", "cuda")) == 1
    one_line_error(capsys, "cuda", "not available")


def test_error_midway_keeps_finished_outputs_whole(small_checkpoint, pair, tmp_path, capsys):
    ref_image, ref_mask, test = pair
    broken = tmp_path / "zz_broken.jpg"
    broken.write_bytes(test.read_bytes()[:200])  # a JPEG header, then nothing
    out = tmp_path / "o"
    out.mkdir()
    (out / "zz_broken.png").write_bytes(b"an earlier result the failed run must not clobber")
    assert segment(small_checkpoint, ref_image, ref_mask, out, test, broken) == 1
    one_line_error(capsys, "zz_broken.jpg")
    written = np.array(Image.open(out / "test.png"))
    assert written.shape == (120, 160)
    assert (out / "zz_broken.png").read_bytes() == b"an earlier result the failed run must not clobber"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16", "exif_rotated", "palette"])
def test_unusual_images_are_converted(small_checkpoint, pair, tmp_path, kind):
    ref_image, ref_mask, _ = pair
    rng = np.random.default_rng(1)
    rgb = (rng.random((90, 130, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"{kind}.png"
    expected_shape = (90, 130)
    if kind == "gray":
        Image.fromarray(rgb[:, :, 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((90, 130), 128, np.uint8)])).save(path)
    elif kind == "uint16":
        Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    else:
        path = tmp_path / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display upright
        Image.fromarray(rgb).save(path, exif=exif)
        expected_shape = (130, 90)
    out = tmp_path / "o"
    assert segment(small_checkpoint, ref_image, ref_mask, out, path) == 0
    assert np.array(Image.open(out / f"{path.stem}.png")).shape == expected_shape


def test_console_script_exit_status_and_help(tmp_path):
    run = subprocess.run([sys.executable, "-m", "persam", "segment", "--checkpoint", str(tmp_path / "x.pth"),
                          "--ref-image", "a.jpg", "--ref-mask", "a.png", "--out", str(tmp_path), "b.jpg"],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "error" in run.stderr
    helped = subprocess.run([sys.executable, "-m", "persam", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for command in ("segment", "learn", "perseg", "eval", "bench"):
        assert command in helped.stdout
