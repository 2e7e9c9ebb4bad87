"""PerSAM / PerSAM-F end to end on perseg-mini with seeded random checkpoints: the API and the
command line give the same masks, files land where promised, concepts round-trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from persam import Concept, ConceptError, PerSAM, PerSAMF, build_sam
from persam.cli import main as cli
from persam.prior import mask_to_feature_grid, target_cells
from persam_datasets import PerSegDataset
from persam_eval import evaluate_perseg
from sam_core import load_image


def read_png(path):
    return np.array(Image.open(path)) > 0


@pytest.fixture(scope="module")
def dataset(perseg_mini):
    return PerSegDataset(perseg_mini)


def count_encodes(persam):
    calls = []
    original = persam.engine.encode

    def counting(image):
        calls.append(1)
        return original(image)

    persam.engine.encode = counting
    return calls


@pytest.mark.parametrize("method", ["persam", "persam-f"])
def test_perseg_api_and_cli_give_identical_masks(small_checkpoint, dataset, perseg_mini, tmp_path, method):
    out = tmp_path / "out"
    assert cli(["perseg", "--data", str(perseg_mini), "--checkpoint", str(small_checkpoint),
                "--method", method, "--fit-steps", "40", "--out", str(out)]) == 0
    sam = build_sam("auto", small_checkpoint)
    persam = (PerSAMF if method == "persam-f" else PerSAM)(sam, fit_steps=40)
    fractions = []
    for name in dataset.objects:
        image, mask = dataset.reference(name).read_pair()
        concept = persam.learn(image, mask)
        encodes = count_encodes(persam)
        for sample in dataset.samples(name):
            result = persam.segment(sample.image_path, concept)
            written = read_png(out / name / f"{sample.index}.png")
            assert written.shape == result.mask.shape == load_image(sample.image_path).shape[:2]
            np.testing.assert_array_equal(written, result.mask)
            fractions.append(result.mask.mean())
        # The reference is also a test image: it was not encoded again.
        assert len(encodes) == len(dataset.samples(name)) - 1
    assert any(0.0 < f < 1.0 for f in fractions), "masks should be non-trivial"
    results = json.loads((out / "results.json").read_text())
    assert {"miou", "macc", "per_object", "per_image", "timing"} <= set(results)
    assert set(results["per_object"]) == set(dataset.objects)
    # The command's score is the evaluator's on the masks it wrote.
    assert results["miou"] == pytest.approx(evaluate_perseg(out, perseg_mini).miou, abs=1e-9)


def test_vit_t_segment_cli_matches_api_and_writes_overlays(vit_t_checkpoint, perseg_mini, tmp_path):
    ref_image = perseg_mini / "Images" / "cat" / "00.jpg"
    ref_mask = perseg_mini / "Annotations" / "cat" / "00.png"
    out = tmp_path / "seg"
    assert cli(["segment", "--model", "vit_t", "--checkpoint", str(vit_t_checkpoint),
                "--ref-image", str(ref_image), "--ref-mask", str(ref_mask), "--out", str(out),
                "--overlay", str(perseg_mini / "Images" / "cat")]) == 0
    persam = PerSAM(build_sam("vit_t", vit_t_checkpoint))
    concept = persam.learn(ref_image, ref_mask)
    for index in ("00", "01", "02"):
        result = persam.segment(perseg_mini / "Images" / "cat" / f"{index}.jpg", concept)
        np.testing.assert_array_equal(read_png(out / f"{index}.png"), result.mask)
        overlay = Image.open(out / f"{index}_overlay.jpg")
        assert overlay.size == (result.mask.shape[1], result.mask.shape[0])
        png = Image.open(out / f"{index}.png")
        assert png.mode == "L" and set(np.unique(np.array(png))) <= {0, 255}
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


@pytest.fixture(scope="module")
def small_persam(small_checkpoint):
    return PerSAM(build_sam("auto", small_checkpoint))


@pytest.fixture(scope="module")
def cat_pair(perseg_mini):
    image = load_image(perseg_mini / "Images" / "cat" / "00.jpg")
    mask = np.array(Image.open(perseg_mini / "Annotations" / "cat" / "00.png")) > 0
    return image, mask


def test_concept_round_trip_and_learn_cli(small_persam, small_checkpoint, cat_pair, perseg_mini, tmp_path):
    image, mask = cat_pair
    concept = small_persam.learn(image, mask, name="cat")
    path = concept.save(tmp_path / "cat.concept")
    assert path.stat().st_size < 20_000
    loaded = Concept.load(path)
    test_image = perseg_mini / "Images" / "cat" / "01.jpg"
    expected = small_persam.segment(test_image, concept)
    again = small_persam.segment(test_image, loaded)
    np.testing.assert_array_equal(expected.mask, again.mask)
    # The CLI: learn a concept, then segment with it; same masks as the reference-pair route.
    concept_file = tmp_path / "cli.concept"
    assert cli(["learn", "--checkpoint", str(small_checkpoint), "--ref-image",
                str(perseg_mini / "Images" / "cat" / "00.jpg"), "--ref-mask",
                str(perseg_mini / "Annotations" / "cat" / "00.png"), "--save", str(concept_file)]) == 0
    out = tmp_path / "out"
    assert cli(["segment", "--checkpoint", str(small_checkpoint), "--concept", str(concept_file),
                "--out", str(out), str(test_image)]) == 0
    np.testing.assert_array_equal(read_png(out / "01.png"), expected.mask)


def test_concept_of_another_model_type_is_refused(small_persam, cat_pair, vit_t_checkpoint):
    concept = small_persam.learn(*cat_pair)
    other = PerSAM(build_sam("vit_t", vit_t_checkpoint))
    with pytest.raises(ConceptError, match="learned with SAM custom.*this model is vit_t"):
        other.segment(cat_pair[0], concept)


def test_persam_f_concept_keeps_its_weights(small_checkpoint, cat_pair, tmp_path):
    persam = PerSAMF(build_sam("auto", small_checkpoint), fit_steps=30)
    concept = persam.learn(*cat_pair)
    loaded = Concept.load(concept.save(tmp_path / "f.concept"))
    assert loaded.method == "persam-f"
    torch.testing.assert_close(loaded.mask_weights, concept.mask_weights)


def test_image_kinds_give_the_same_mask(small_persam, cat_pair, perseg_mini):
    concept = small_persam.learn(*cat_pair)
    path = perseg_mini / "Images" / "cat" / "02.jpg"
    from_path = small_persam.segment(path, concept).mask
    from_pil = small_persam.segment(Image.open(path), concept).mask
    from_array = small_persam.segment(load_image(path), concept).mask
    np.testing.assert_array_equal(from_path, from_pil)
    np.testing.assert_array_equal(from_path, from_array)


def test_segment_many_uses_one_encoder_pass(small_persam, perseg_mini, dataset):
    concepts = [small_persam.learn(*dataset.reference(name).read_pair()) for name in dataset.objects]
    image = perseg_mini / "Images" / "duck_toy" / "01.jpg"
    singles = [small_persam.segment(image, c) for c in concepts]
    small_persam.cache.clear()
    encodes = count_encodes(small_persam)
    many = small_persam.segment_many(image, concepts)
    assert len(encodes) == 1
    stacked = np.stack([m.mask for m in many])
    assert stacked.sum(0).max() <= 1  # disjoint
    logits = torch.stack([s.logits for s in singles])
    # segment_many decodes all concepts in one batch: its logits equal the single ones to float
    # rounding (tests/test_persam_batch.py), so pixels within that of a decision are not compared.
    tolerance = 1e-4
    undecided = (logits.abs() < tolerance).any(0).numpy()
    for index, (single, joint) in enumerate(zip(singles, many)):
        # A pixel stays with a concept exactly when no other concept claims it with a higher
        # logit (an equal one: the earlier concept).
        others = [j for j in range(len(singles)) if j != index]
        beaten = np.zeros_like(single.mask)
        for j in others:
            higher = (logits[j] > logits[index]) | ((logits[j] == logits[index]) & (j < index))
            beaten |= singles[j].mask & higher.numpy()
            gap = (logits[j] - logits[index]).abs()
            undecided |= ((gap < tolerance) & (gap > 0)).numpy() & singles[j].mask
        clear = ~undecided
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(joint.mask[clear], (single.mask & ~beaten)[clear])
    small_persam.engine.encode = type(small_persam.engine).encode.__get__(small_persam.engine)


def test_few_shot_pools_target_cells(small_persam, dataset):
    pairs = [s.read_pair() for s in dataset.samples("cat")[:2]]
    concept = small_persam.learn(pairs)
    cells = []
    for image, mask in pairs:
        _, embedding = small_persam.embed(image)
        cells.append(target_cells(embedding.features, mask_to_feature_grid(mask)))
    torch.testing.assert_close(concept.target_embedding, torch.cat(cells).mean(0))
    assert concept.num_references == 2


def test_bench_reports_stages(small_checkpoint, perseg_mini, tmp_path, capsys):
    report_file = tmp_path / "bench.json"
    assert cli(["bench", "--checkpoint", str(small_checkpoint), "--data", str(perseg_mini), "--objects", "1",
                "--method", "persam-f", "--fit-steps", "20", "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert report["images"] == 3 and report["encoder_passes"] == 3  # reference reused
    assert report["stage_calls"]["fit"] == 1
    assert "decode + refine" in capsys.readouterr().out
