"""References from clicks (README 'Web page'): ``PerSAM.reference_mask`` and ``--ref-point`` / ``--ref-box``.

A stand-in engine "segments" the coloured rectangle under the first object point, so the tests
can check which object a click gives, that SAM's highest-scoring mask is the one kept, and the
prompts passed on. The CLI test runs the real random vit_t end to end (its masks mean nothing,
so it checks the files and the single encoder pass).
"""
from __future__ import annotations

import sys
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from persam import Concept, PerSAM, PromptError
from persam.reference import check_prompts
from persam_files import read_mask, save_image
from sam_core import Decoded, ImageEmbedding, SamEngine, load_image
from sam_core.transforms import resized_shape

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 60, 80
RED_BOX = (slice(10, 30), slice(8, 30))  # rows, cols
BLUE_BOX = (slice(35, 55), slice(45, 75))


def two_objects() -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[RED_BOX] = (220, 30, 30)
    image[BLUE_BOX] = (30, 30, 220)
    return image


def region(box) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[box] = True
    return mask


class _NoWeights(torch.nn.Module):
    model_type = "stub"


class ObjectEngine(SamEngine):
    """Decodes the non-black region with the colour under the first object point (or under
    the box centre) as the SECOND of three masks, and gives it the highest score; the first
    is the whole image, the third is empty. Records encodes and decode prompts."""

    def __init__(self) -> None:  # no model, so SamEngine.__init__ is not called
        self.sam = _NoWeights()
        self.encode_calls = 0
        self.decode_calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode(self, image) -> ImageEmbedding:
        self.encode_calls += 1
        array = load_image(image)
        embedding = ImageEmbedding(torch.zeros(1, 256, 64, 64), resized_shape(array.shape[:2]),
                                   tuple(array.shape[:2]))
        object.__setattr__(embedding, "pixels", array)  # frozen dataclass: the stub's own field
        return embedding

    def decode(self, embedding, points=None, labels=None, box=None, mask_input=None, multimask=True,
               attn_sim=None, target_embedding=None, high_res=True) -> Decoded:
        self.decode_calls.append({"points": points, "labels": labels, "box": box, "multimask": multimask})
        if points is not None and (np.asarray(labels) == 1).any():
            x, y = np.asarray(points)[np.asarray(labels) == 1][0]
        else:
            x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        pixels = embedding.pixels
        colour = pixels[int(y), int(x)]
        found = (pixels == colour).all(axis=2) & pixels.any(axis=2)
        masks = np.stack([np.ones_like(found), found, np.zeros_like(found)])
        logits = torch.from_numpy(np.where(masks, 10.0, -10.0)).float()
        return Decoded(logits, torch.tensor([0.5, 0.9, 0.1]), torch.zeros(3, 256, 256))


@pytest.fixture()
def stub():
    engine = ObjectEngine()
    return engine, PerSAM(engine)


def test_a_point_inside_an_object_gives_that_object(stub):
    engine, persam = stub
    image = two_objects()
    red = persam.reference_mask(image, points=[(15, 20)])
    blue = persam.reference_mask(image, points=[(60, 45)], labels=[1])
    assert red.dtype == bool and red.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(red, region(RED_BOX))  # the highest-scoring of three masks
    np.testing.assert_array_equal(blue, region(BLUE_BOX))
    assert all(call["multimask"] for call in engine.decode_calls)
    assert engine.encode_calls == 1  # the second click reuses the cached embedding


def test_negative_points_and_box_reach_sam_in_pixels(stub):
    engine, persam = stub
    mask = persam.reference_mask(two_objects(), points=[(60, 45), (10, 50)], labels=[1, 0],
                                 box=(74, 54, 44, 34))
    np.testing.assert_array_equal(mask, region(BLUE_BOX))
    call = engine.decode_calls[-1]
    np.testing.assert_array_equal(call["points"], [[60, 45], [10, 50]])
    np.testing.assert_array_equal(call["labels"], [1, 0])
    np.testing.assert_array_equal(call["box"], [44, 34, 74, 54])  # corners put in order
    box_only = persam.reference_mask(two_objects(), box=(8, 10, 29, 29))
    np.testing.assert_array_equal(box_only, region(RED_BOX))


def test_learn_after_a_click_encodes_the_reference_once(stub):
    engine, persam = stub
    image = two_objects()
    mask = persam.reference_mask(image, points=[(15, 20)])
    concept = persam.learn(image, mask)
    assert engine.encode_calls == 1
    assert concept.method == "persam"


@pytest.mark.parametrize("points, labels, box, fragment", [
    (None, None, None, "at least one point or a box"),
    ([(80, 10)], None, None, "outside the 80x60 image"),
    ([(-1, 10)], None, None, "outside"),
    ([(10, 10)], [0], None, "at least one object point"),
    ([(10, 10)], [2], None, r"1 \(object\) or 0"),
    ([(10, 10)], [1, 1], None, "1 points but 2 labels"),
    (None, None, (5, 5, 5, 30), "no area"),
    (None, None, (100, 70, 120, 90), "outside"),
    (None, None, (1, 2, 3), "4 numbers"),
])
def test_bad_prompts_are_one_line_errors(points, labels, box, fragment):
    with pytest.raises(PromptError, match=fragment) as info:
        check_prompts((HEIGHT, WIDTH), points, labels, box)
    assert "\n" not in str(info.value)


def test_box_is_clipped_to_the_image():
    _, _, box = check_prompts((HEIGHT, WIDTH), box=(-5, -5, 200, 30))
    np.testing.assert_array_equal(box, [0, 0, WIDTH - 1, 30])


def persam_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "persam", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_cli_learn_from_a_click_writes_the_mask_beside_the_concept(vit_t_checkpoint, tmp_path):
    """Random weights, real vit_t: the click path end to end."""
    image_path = save_image(tmp_path / "mug.png", two_objects())
    concept_path = tmp_path / "concepts" / "mug.pt"
    result = persam_cli("learn", "--checkpoint", str(vit_t_checkpoint), "--ref-image", str(image_path),
                        "--ref-point", "15,20", "--ref-negative", "60,45", "--ref-box", "5,5,35,35",
                        "--save", str(concept_path))
    assert result.returncode == 0, result.stderr  # seeded weights: this click decodes a non-empty mask
    mask_path = tmp_path / "concepts" / "mug_ref_mask.png"
    assert str(mask_path) in result.stdout
    mask = read_mask(mask_path)
    assert mask.shape == (HEIGHT, WIDTH) and mask.any()
    concept = Concept.load(concept_path)
    assert concept.model_type == "vit_t" and concept.name == "mug"


def test_cli_segment_from_a_click(vit_t_checkpoint, tmp_path):
    image_path = save_image(tmp_path / "ref.png", two_objects())
    target = save_image(tmp_path / "target.png", two_objects()[::-1].copy())
    out = tmp_path / "out"
    result = persam_cli("segment", "--checkpoint", str(vit_t_checkpoint), "--ref-image", str(image_path),
                        "--ref-point", "15,20", "--out", str(out), str(target))
    assert result.returncode == 0, result.stderr
    assert read_mask(out / "ref_ref_mask.png").any()
    assert read_mask(out / "target.png").shape == (HEIGHT, WIDTH)


@pytest.mark.parametrize("args, fragment", [
    (["--ref-point", "1;2"], "expected X,Y"),
    (["--ref-box", "1,2,3"], "expected X0,Y0,X1,Y1"),
])
def test_cli_bad_click_syntax(args, fragment, tmp_path):
    result = persam_cli("learn", "--checkpoint", "x.pt", "--ref-image", "a.png", *args, "--save", "c.pt")
    assert result.returncode == 2 and fragment in result.stderr


def test_cli_mask_and_clicks_together_is_an_error(tmp_path):
    result = persam_cli("learn", "--checkpoint", "x.pt", "--ref-image", "a.png", "--ref-mask", "m.png",
                        "--ref-point", "1,2", "--save", "c.pt")
    assert result.returncode == 1
    assert "exactly one --ref-image and no --ref-mask" in result.stderr
