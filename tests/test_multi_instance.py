"""The seeded multi-instance generator (docs/method.md 11) on a generated PerSeg folder."""
from __future__ import annotations

import json

import numpy as np

from find_data import OBJECTS, make_perseg
from persam_datasets import PerSegDataset, make_multi_instance, read_label_map
from persam_datasets.multi_instance import MAX_INSTANCE_OVERLAP


def test_generator_is_seeded_and_follows_the_protocol(tmp_path):
    source = make_perseg(tmp_path / "perseg")
    first = make_multi_instance(source, tmp_path / "a", seed=7, images_per_object=5)
    second = make_multi_instance(source, tmp_path / "b", seed=7, images_per_object=5)
    other = make_multi_instance(source, tmp_path / "c", seed=8, images_per_object=5)
    assert first == second and first["images"] != other["images"]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["images"] == first["images"]

    generated = PerSegDataset(tmp_path / "a")
    assert generated.objects == sorted(OBJECTS)
    for name in generated.objects:
        samples = generated.test_samples(name)
        assert [s.index for s in samples] == ["01", "02", "03", "04", "05"]
        for number, sample in enumerate(samples):
            labels = read_label_map(sample.mask_path)
            again = read_label_map(tmp_path / "b" / "Annotations" / name / f"{sample.index}.png")
            np.testing.assert_array_equal(labels, again)
            assert (tmp_path / "b" / "Images" / name / f"{sample.index}.jpg").read_bytes() == sample.image_path.read_bytes()
            record = first["images"][f"{name}/{sample.index}"]
            assert not record["background"].startswith(name + "/")  # another object's image
            assert len(record["instances"]) == number % 4  # k = 0, 1, 2, 3, 0
            ids = sorted(int(i) for i in np.unique(labels) if i)
            assert ids == list(range(1, len(record["instances"]) + 1))
            for instance_id, pasted in enumerate(record["instances"], start=1):
                visible = int((labels == instance_id).sum())
                # later pastes cover at most 20% of an earlier one (each pair), so with up to
                # two later pastes at least 60% stays visible; the last one is fully visible
                assert visible >= (1 - 2 * MAX_INSTANCE_OVERLAP) * pasted["area"] - 1
                if instance_id == len(record["instances"]):
                    assert visible == pasted["area"]
                x0, y0, x1, y1 = pasted["box"]
                assert labels[y0: y1 + 1, x0: x1 + 1].__eq__(instance_id).any()
                assert 0 < pasted["scale"] <= 1.0
        reference = generated.reference(name).read_mask()
        np.testing.assert_array_equal(reference, PerSegDataset(source).reference(name).read_mask())
