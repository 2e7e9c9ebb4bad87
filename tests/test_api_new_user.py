"""What a new user of the Python API ran into: integer image arrays, one path where a list is
expected, a mask forgotten, and the other-checkpoint warning (who, where, how often)."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from persam import PerSAM
from persam.search import search
from persam_files import ImageReadError, read_image, read_mask


@pytest.fixture(scope="module")
def persam(small_sam):
    return PerSAM(small_sam, cache_size=0)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    generator = np.random.default_rng(0)
    return generator.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def box_mask() -> np.ndarray:
    mask = np.zeros((48, 64), bool)
    mask[8:40, 10:50] = True
    return mask


# -- integer arrays -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_integer_arrays_holding_8_bit_values_read_as_those_values(photo, dtype):
    values = photo // 2 if dtype == np.int8 else photo  # int8 holds 0..127 only
    assert np.array_equal(read_image(values.astype(dtype)), values)  # was all zero (v >> 8)


def test_integer_arrays_outside_0_255_are_refused_naming_the_range(photo):
    negative = photo.astype(np.int64)
    negative[0, 0, 0] = -1
    with pytest.raises(ImageReadError, match=r"int64 with values -1\.\.255; expected 8-bit values"):
        read_image(negative)
    with pytest.raises(ImageReadError, match=r"int32 with values 0\.\.300"):
        read_image(np.arange(301, dtype=np.int32).reshape(1, 301).repeat(20, axis=0))


def test_uint16_stays_16_bit_data_and_warns_when_it_looks_8_bit(photo):
    wide = photo.astype(np.uint16) * 257  # 16-bit data: 0..65535
    assert np.array_equal(read_image(wide), photo)
    with pytest.warns(UserWarning, match="uint16 with values 0..255: read as 16-bit data that is nearly black"):
        dark = read_image(photo.astype(np.uint16))
    assert dark.max() == 0


def test_a_dark_16_bit_file_is_not_warned_about(tmp_path):
    Image.fromarray(np.full((20, 20), 200, np.uint16)).save(tmp_path / "dark16.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "dark16.png").max() == 0  # 200 / 256: black, as OpenCV reads it


def test_16_bit_png_files_read_as_before(tmp_path, photo):
    grey = photo[:, :, 0].astype(np.uint16) * 257 + 3  # the low byte must not matter
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    assert np.array_equal(read_image(tmp_path / "g16.png")[:, :, 0], (grey >> 8).astype(np.uint8))


def test_other_types_are_a_clear_type_error(photo):
    with pytest.raises(TypeError, match="an image is a path, a PIL image or a numpy array, not Tensor"):
        read_image(torch.from_numpy(photo))
    with pytest.raises(TypeError, match="a mask is a path, a PIL image or a numpy array, not NoneType"):
        read_mask(None)


# -- learn without a mask, one path for a list ----------------------------------------------------

def test_learn_without_its_mask_says_so(persam, photo, box_mask):
    with pytest.raises(TypeError, match=r"learn\(\) needs the reference's mask: learn\(image, mask\)"):
        persam.learn(photo, None)
    with pytest.raises(TypeError, match=r"a list of \(image, mask\) pairs; for one reference, learn\(image, mask\)"):
        persam.learn((photo, box_mask))  # one pair, not in a list
    assert persam.learn([(photo, box_mask)]).num_references == 1


def test_one_path_is_one_image_for_calibrate_and_search(persam, photo, box_mask, tmp_path):
    Image.fromarray(photo).save(tmp_path / "yes.png")
    Image.fromarray(photo[::-1].copy()).save(tmp_path / "no.png")
    concept = persam.learn(photo, box_mask, name="thing")
    calibrated = persam.calibrate(concept, positives=str(tmp_path / "yes.png"), negatives=tmp_path / "no.png")
    assert calibrated.calibration is not None
    assert calibrated.calibration.n_pos == 1 and calibrated.calibration.n_neg == 1

    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(photo).save(album / "a.png")
    concept_file = concept.save(tmp_path / "thing.pt")
    summary = search(str(album), str(concept_file), tmp_path / "out", persam=persam, progress=False)
    assert summary.images == 1 and summary.errors == 0, summary  # a string was taken character by character before
    summary = search(album, [concept], tmp_path / "out2", persam=persam, progress=False)  # a Concept by its name
    assert summary.images == 1
    assert (tmp_path / "out2" / "results.jsonl").read_text().count('"thing"') == 1


# -- a concept from another checkpoint ------------------------------------------------------------

def test_other_checkpoint_warning_names_the_concept_points_at_the_caller_and_comes_once(
        persam, photo, box_mask):
    concept = replace(persam.learn(photo, box_mask, name="mug"), fingerprint="another checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every warning raised, not only the first shown
        persam.find(photo, concept)
        persam.find(photo, concept)
        persam.segment(photo, concept)
    raised = [w for w in caught if "different checkpoint" in str(w.message)]
    assert len(raised) == 1, [str(w.message) for w in caught]
    assert str(raised[0].message) == (f"concept 'mug' was learned with a different checkpoint of SAM "
                                      f"{persam.model_type}; results may be poor")
    assert Path(raised[0].filename).name == Path(__file__).name  # the user's line, not persam's


# -- messages that say what to do -----------------------------------------------------------------

def test_points_of_the_wrong_shape_are_a_prompt_error(persam, photo):
    from persam import PromptError

    with pytest.raises(PromptError, match=r"points must be \(x, y\) pairs.*got shape \(3,\)"):
        persam.reference_mask(photo, points=[40, 30, 20])
    with pytest.raises(PromptError, match=r"points must be \(x, y\) pairs of numbers"):
        persam.reference_mask(photo, points=[("a", "b")])
    assert persam.reference_mask(photo, points=(30, 20)).shape == photo.shape[:2]  # one (x, y) alone


def test_a_concept_file_given_as_checkpoint_is_named_as_such(persam, photo, box_mask, tmp_path):
    from sam_core import CheckpointError

    path = persam.learn(photo, box_mask).save(tmp_path / "cat.pt")
    with pytest.raises(CheckpointError, match="is a persam concept file, not a SAM checkpoint"):
        PerSAM.from_checkpoint(path)


def test_a_mask_of_the_turned_size_hints_at_exif(persam, photo, tmp_path):
    from persam import MaskError

    turned = np.zeros((64, 48), np.uint8)  # (H, W) of the photo swapped
    turned[10:30, 10:30] = 255
    Image.fromarray(turned).save(tmp_path / "turned.png")
    with pytest.raises(MaskError, match=r"is 48x64 \(WxH\) but its image is 64x48; images are read upright"):
        persam.learn(photo, tmp_path / "turned.png")


def test_tracker_takes_the_first_label_map_as_a_path(small_sam, photo, box_mask, tmp_path):
    from persam import Tracker
    from persam_files import save_label_png

    save_label_png(tmp_path / "first.png", box_mask.astype(np.uint8))
    maps = list(Tracker(small_sam).track([photo, photo], tmp_path / "first.png"))
    assert len(maps) == 2 and np.array_equal(maps[0], box_mask.astype(np.uint8))
    assert maps[1].shape == box_mask.shape
