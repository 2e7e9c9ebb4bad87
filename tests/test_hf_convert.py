"""The official <-> transformers key table, the converter, and transformers folders / hub ids.

A checkpoint converted from the official layout to the transformers layout must give the same
PerSAM masks as the original file (the conversion only renames tensors, so: identical).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sam_core
from persam import PerSAM
from sam_core import CheckpointError, build_sam, build_sam_model, save_transformers_folder
from sam_core.hf_convert import KEY_TABLE, hf_to_official, official_to_hf
import sam_fixtures
from sam_fixtures import make_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_checkpoint() -> Path:
    """The smallest reduced ViT of sam_fixtures (2 blocks of width 64, one global)."""
    return sam_fixtures.checkpoint("vit_pad")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, small_checkpoint) -> Path:
    return save_transformers_folder(small_checkpoint, tmp_path_factory.mktemp("hf") / "small")


def _disk(height: int, width: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_key_table_round_trip_and_matches_transformers_names(model_type):
    with torch.device("meta"):  # names and shapes only, no memory
        ours = build_sam_model(sam_core.MODEL_CONFIGS[model_type]).state_dict()
    hf_names = official_to_hf(ours)
    assert hf_to_official(hf_names).keys() == ours.keys()
    transformers = pytest.importorskip("transformers")
    config = json.loads(json.dumps(sam_core.hf_convert.hf_config_from_vit(sam_core.MODEL_CONFIGS[model_type])))
    with torch.device("meta"):
        theirs = transformers.SamModel(transformers.SamConfig(**config)).state_dict()
    theirs.pop("prompt_encoder.shared_embedding.positional_embedding")  # tied copy
    assert set(hf_names) == set(theirs)
    assert all(hf_names[k].shape == theirs[k].shape for k in theirs)


def test_table_is_one_to_one():
    officials = [o for o, _ in KEY_TABLE]
    hfs = [h for _, h in KEY_TABLE]
    assert len(set(officials)) == len(officials) and len(set(hfs)) == len(hfs)


def test_converted_folder_gives_the_same_persam_masks(small_checkpoint, converted):
    assert sorted(p.name for p in converted.iterdir()) == ["config.json", "model.safetensors"]
    original = build_sam("auto", small_checkpoint)
    loaded = build_sam("auto", converted)
    assert loaded.model_type == original.model_type
    a, b = original.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    image = make_image(120, 160, seed=5)
    mask = _disk(120, 160, 60, 70, 25)
    test_image = make_image(120, 160, seed=6)
    persam_a, persam_b = PerSAM(original), PerSAM(loaded)
    ra = persam_a.segment(test_image, persam_a.learn(image, mask))
    rb = persam_b.segment(test_image, persam_b.learn(image, mask))
    assert ra.mask.any()
    assert np.array_equal(ra.mask, rb.mask) and ra.score == rb.score


def test_transformers_reads_the_converted_folder(small_checkpoint, converted):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.SamModel.from_pretrained(converted, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    engine = sam_core.SamEngine(build_sam("auto", small_checkpoint))
    image = make_image(100, 140, seed=9)
    embedding = engine.encode(image)
    ours = engine.decode(embedding, points=[[50, 40]], labels=[1], high_res=False)
    coords, labels, _ = engine.prompt_tensors(embedding, [[50, 40]], [1])
    with torch.no_grad():
        out = model.eval()(image_embeddings=embedding.features, input_points=coords[None],
                           input_labels=labels[None])
    # transformers' decoder LayerNorm eps is 1e-6 (SAM's 1e-5): agreement to 1e-3, not bit for bit.
    assert (out.pred_masks[0, 0] - ours.low_res_logits).abs().max() < 1e-3


def test_bare_transformers_safetensors_loads_by_shapes(converted):
    model = build_sam("auto", converted / "model.safetensors")
    reference = build_sam("auto", converted)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_vit_t_cannot_be_converted(vit_t_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="TinyViT"):
        save_transformers_folder(vit_t_checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _copy_folder(src: Path, dst: Path, config_update: dict | None = None, weights: bool = True) -> Path:
    dst.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    for part, values in (config_update or {}).items():
        config.setdefault(part, {}).update(values)
    (dst / "config.json").write_text(json.dumps(config))
    if weights:
        (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    return dst


@pytest.mark.parametrize("update, fragment", [
    ({"mask_decoder_config": {"hidden_size": 128}}, "mask_decoder_config.hidden_size"),
    ({"vision_config": {"mlp_dim": 100}}, "mlp_dim"),
    ({"vision_config": {"global_attn_indexes": [7]}}, "global_attn_indexes"),
    ({"vision_config": {"hidden_size": 128, "mlp_dim": 512}}, "does not fit"),  # config.json and tensors disagree
    ({"vision_config": {"num_hidden_layers": 3}}, "missing keys"),
])
def test_bad_transformers_folders_are_one_line(converted, tmp_path, update, fragment):
    folder = _copy_folder(converted, tmp_path / "bad", update)
    with pytest.raises(CheckpointError) as info:
        build_sam("auto", folder)
    message = str(info.value)
    assert "\n" not in message and fragment in message and str(folder) in message


def test_folder_without_weights(converted, tmp_path):
    folder = _copy_folder(converted, tmp_path / "empty", weights=False)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        build_sam("auto", folder)


def test_wrong_model_type_for_a_folder(converted):
    with pytest.raises(CheckpointError, match="is a custom checkpoint, not vit_b"):
        build_sam("vit_b", converted)


HUB_SCRIPT = """
import sys, sam_core
sam = sam_core.build_sam("auto", "someone/tiny-sam")
print("loaded", sam.model_type, sam.image_encoder.pos_embed.shape[-1])
try:
    sam_core.build_sam("auto", "someone/not-cached")
except sam_core.CheckpointError as exc:
    print("error", type(exc).__name__, str(exc))
"""


def test_hub_id_from_the_hub_cache_offline(converted, tmp_path):
    """A hub id resolves through huggingface_hub's own cache; offline, a missing one is one line."""
    pytest.importorskip("huggingface_hub")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-sam"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    _copy_folder(converted, repo / "snapshots" / revision)
    variables = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
                 "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], capture_output=True, text=True,
                          env={**os.environ, **variables}, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "loaded custom 64"
    assert lines[1].startswith("error DownloadError someone/not-cached is not in the Hugging Face cache")
