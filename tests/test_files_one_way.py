"""One reader and one writer for the whole project (persam_files (one reader/writer)): every package's public file
names are the persam_files objects themselves, so all parts see the same pixels."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

import persam
import persam.io
import persam_datasets
import persam_eval
import persam_files
import sam_core


def test_public_names_are_the_persam_files_objects():
    assert sam_core.load_image is persam_files.read_image
    assert sam_core.ImageReadError is persam_files.ImageReadError
    assert persam_datasets.ImageReadError is persam_files.ImageReadError
    assert persam_datasets.read_rgb_image is persam_files.read_image
    assert persam_datasets.read_binary_mask is persam_files.read_mask
    assert persam_datasets.read_label_map is persam_files.read_label_map
    assert persam_datasets.read_image_size is persam_files.read_image_size
    assert persam_eval.write_json_atomic is persam_files.write_json
    assert persam_eval.write_text_atomic is persam_files.write_text
    assert persam.io.save_json is persam_files.write_json
    assert persam.io.atomic_write is persam_files.atomic_write
    assert issubclass(persam.MaskError, persam_files.MaskReadError)


def test_sixteen_bit_keeps_the_top_byte_everywhere(tmp_path):
    """v >> 8, as OpenCV's imread (the paper's reader) gives: 65280 -> 255, where v / 257
    would round to 254, and 255 -> 0, where v / 257 would round to 1."""
    values = np.array([[0, 255, 65280, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    expected = [0, 0, 255, 255]
    for read in (sam_core.load_image, persam_datasets.read_rgb_image, persam_files.read_image):
        pixels = read(tmp_path / "deep.png")
        assert pixels[0, :, 0].tolist() == expected and pixels[0, :, 2].tolist() == expected


def test_json_writers_write_nan_as_null(tmp_path):
    data = {"miou": float("nan"), "scores": [1.0, float("inf")], "n": np.int64(3)}
    for index, write in enumerate((persam_eval.write_json_atomic, persam.io.save_json)):
        path = write(tmp_path / f"out{index}.json", data)
        assert json.loads(path.read_text()) == {"miou": None, "scores": [1.0, None], "n": 3}
    assert "NaN" not in (tmp_path / "out0.json").read_text()
