"""Dataset readers (persam_datasets): layouts, lazy loading, image/mask formats, errors."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from persam_datasets import (
    DatasetLayoutError,
    DavisDataset,
    ImageReadError,
    PerSegDataset,
    read_binary_mask,
    read_image_size,
    read_label_map,
    read_rgb_image,
)

PERSEG_MINI = Path(__file__).resolve().parents[1] / "examples" / "perseg-mini"


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    """Save a uint8 label map as a palette PNG; index i gets an arbitrary colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [0, 0, 0] + [(37 * i) % 256 for i in range(3, 768)]
    image.putpalette(palette)
    image.save(path)


def save_jpeg(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(path)


# ---------------------------------------------------------------- image helpers


def test_read_rgb_image_converts_modes(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgb = read_rgb_image(tmp_path / "gray.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[:, :, 0], gray) and np.array_equal(rgb[:, :, 2], gray)

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: alpha is dropped, not blended
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert read_rgb_image(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]

    # 16-bit: 65535 -> 255, 257 * 100 -> 100.
    sixteen = np.array([[0, 65535], [25700, 257]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert read_rgb_image(tmp_path / "deep.png")[:, :, 1].tolist() == [[0, 255], [100, 1]]

    palette = np.array([[0, 1]], dtype=np.uint8)
    save_palette_png(tmp_path / "pal.png", palette)
    # Palette colours, not indices: index 1 of save_palette_png is (37*3, 37*4, 37*5) % 256.
    assert read_rgb_image(tmp_path / "pal.png")[0, 1].tolist() == [111, 148, 185]


def test_read_rgb_image_applies_exif_rotation(tmp_path):
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # top-left white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    upright = read_rgb_image(tmp_path / "rotated.jpg")
    assert upright.shape == (3, 2, 3)
    assert read_image_size(tmp_path / "rotated.jpg") == (3, 2)
    # After a 90 degree clockwise turn the old top-left corner is at the top-right.
    assert upright[0, 1].mean() > 200 and upright[2, 0].mean() < 60


def test_image_read_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png"):
        read_rgb_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ImageReadError, match="notes.png is not an image"):
        read_binary_mask(tmp_path / "notes.png")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_rgb_image(tmp_path / "cut.png")


def test_mask_formats_all_mean_nonzero_is_object(tmp_path):
    shape = (4, 5)
    expected = np.zeros(shape, dtype=bool)
    expected[1:3, 2:4] = True
    save_palette_png(tmp_path / "palette.png", expected.astype(np.uint8) * 3)
    Image.fromarray(expected.astype(np.uint8) * 255, mode="L").save(tmp_path / "gray.png")
    green = np.zeros((*shape, 3), dtype=np.uint8)
    green[expected, 1] = 9  # only one channel nonzero still counts
    Image.fromarray(green).save(tmp_path / "rgb.png")
    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not make background count
    rgba[expected, 0] = 1
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(expected.astype(np.uint16) * 1000).save(tmp_path / "deep.png")
    for name in ("palette", "gray", "rgb", "rgba", "deep"):
        mask = read_binary_mask(tmp_path / f"{name}.png")
        assert mask.dtype == bool and np.array_equal(mask, expected), name


def test_label_map_keeps_palette_indices(tmp_path):
    labels = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    save_palette_png(tmp_path / "labels.png", labels)
    assert np.array_equal(read_label_map(tmp_path / "labels.png"), labels)
    Image.fromarray(np.zeros((2, 3, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match="colour.png.*palette"):
        read_label_map(tmp_path / "colour.png")


# ---------------------------------------------------------------- PerSeg


def test_perseg_mini_layout():
    dataset = PerSegDataset(PERSEG_MINI)
    assert dataset.objects == ["cat", "colorful_sneaker", "duck_toy"]
    assert [s.index for s in dataset.samples("cat")] == ["00", "01", "02"]
    assert dataset.reference("duck_toy").index == "00"
    assert [s.key for s in dataset.test_samples("duck_toy")] == ["duck_toy/01", "duck_toy/02"]
    sample = dataset.test_samples("cat")[0]
    image, mask = sample.read_pair()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    assert 0 < mask.mean() < 1
    assert sample.mask_path == PERSEG_MINI / "Annotations" / "cat" / "01.png"


def make_perseg(root: Path, objects=("mug", "cat"), indices=("00", "01")) -> Path:
    for name in objects:
        for index in indices:
            save_jpeg(root / "Images" / name / f"{index}.jpg", 6, 8)
            mask = np.zeros((6, 8), dtype=np.uint8)
            mask[1:3, 1:4] = 1
            save_palette_png(root / "Annotations" / name / f"{index}.png", mask)
    return root


def test_perseg_sorting_and_laziness(tmp_path):
    root = make_perseg(tmp_path / "ps", objects=("mug", "cat"), indices=("00", "2", "10"))
    # A corrupt image does not stop the dataset from opening: files are read on access.
    (root / "Images" / "mug" / "10.jpg").write_bytes(b"garbage")
    (root / "Images" / ".DS_Store").write_text("")
    dataset = PerSegDataset(root)
    assert dataset.objects == ["cat", "mug"]
    assert [s.index for s in dataset.samples("mug")] == ["00", "2", "10"]
    with pytest.raises(ImageReadError, match="10.jpg"):
        dataset.samples("mug")[2].read_image()


def test_perseg_mask_size_must_match_image(tmp_path):
    root = make_perseg(tmp_path / "ps")
    save_palette_png(root / "Annotations" / "cat" / "01.png", np.ones((5, 8), dtype=np.uint8))
    with pytest.raises(DatasetLayoutError, match=r"01.png is 8x5 .* is 8x6"):
        PerSegDataset(root).test_samples("cat")[0].read_pair()


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "Images").rename(root / "Photos"), "has no Images/ folder"),
        (lambda root: (root / "Annotations").rename(root / "Masks"), "has no Annotations/ folder"),
        (
            lambda root: (root / "Annotations" / "cat" / "01.png").unlink(),
            "no annotation for Images/cat/01.jpg: expected Annotations/cat/01.png",
        ),
        (
            lambda root: (root / "Images" / "mug" / "00.jpg").unlink(),
            "object mug has no reference image with index 00",
        ),
        (
            lambda root: shutil.rmtree(root / "Annotations" / "cat"),
            "Images/cat has no matching Annotations/cat folder",
        ),
    ],
)
def test_perseg_layout_errors(tmp_path, breakage, message):
    root = tmp_path / "ps"
    if message != "does not exist":
        make_perseg(root)
    breakage(root)
    with pytest.raises(DatasetLayoutError, match=re.escape(message)):
        PerSegDataset(root)


# ---------------------------------------------------------------- DAVIS


def make_davis(root: Path, sequences: dict[str, int], split: str = "val", size=(10, 12)) -> Path:
    """DAVIS layout with ``sequences`` = {name: number of frames}; object k of a sequence
    is a 2x2 square at row 2k, column t (frame t); frame 0 also holds a void pixel."""
    height, width = size
    for name, num_frames in sequences.items():
        for t in range(num_frames):
            save_jpeg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", height, width)
            labels = np.zeros(size, dtype=np.uint8)
            for k in (1, 2, 3):
                labels[2 * k : 2 * k + 2, t : t + 2] = k
            if t == 0:
                labels[-1, -1] = 255
            save_palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(sequences) + "\n\n")
    return root


def test_davis_reader(tmp_path):
    root = make_davis(tmp_path / "davis", {"walk": 4, "bike": 3})
    dataset = DavisDataset(root, split="val")
    assert dataset.sequences == ["walk", "bike"]  # file order, as the toolkit
    assert dataset.frame_names("walk") == ["00000", "00001", "00002", "00003"]
    assert dataset.frame_paths("bike")[0] == root / "JPEGImages" / "480p" / "bike" / "00000.jpg"
    assert dataset.num_objects("walk") == 3  # the void pixel (255) is not an object
    first = dataset.first_label_map("walk")
    assert first.dtype == np.uint8 and first[-1, -1] == 0
    stack = dataset.label_maps("walk")
    assert stack.shape == (4, 10, 12) and stack.dtype == np.uint8
    assert np.array_equal(np.unique(stack), [0, 1, 2, 3])
    assert stack[3, 2, 3] == 1 and stack[3, 2, 2] == 0  # object 1 moved to column 3
    assert dataset.read_frame("walk", 1).shape == (10, 12, 3)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: (root / "ImageSets" / "2017" / "val.txt").unlink(), r"no ImageSets/2017/val\.txt"),
        (lambda root: (root / "JPEGImages").rename(root / "Frames"), "has no JPEGImages/480p/ folder"),
        (lambda root: (root / "Annotations").rename(root / "GT"), "has no Annotations/480p/ folder"),
        (
            lambda root: (root / "ImageSets" / "2017" / "val.txt").write_text("walk\nghost\n"),
            "sequence ghost .* has no folder JPEGImages/480p/ghost",
        ),
    ],
)
def test_davis_layout_errors(tmp_path, breakage, message):
    root = make_davis(tmp_path / "davis", {"walk": 3})
    breakage(root)
    with pytest.raises(DatasetLayoutError, match=message):
        DavisDataset(root, split="val")


def test_davis_missing_annotation_is_named(tmp_path):
    root = make_davis(tmp_path / "davis", {"walk": 3})
    (root / "Annotations" / "480p" / "walk" / "00001.png").unlink()
    dataset = DavisDataset(root)  # listing is lazy: opening still works
    with pytest.raises(
        DatasetLayoutError,
        match=r"no annotation for JPEGImages/480p/walk/00001\.jpg: expected Annotations/480p/walk/00001\.png",
    ):
        dataset.label_maps("walk")
    with pytest.raises(DatasetLayoutError, match=r"train\.txt"):
        DavisDataset(root, split="train")
