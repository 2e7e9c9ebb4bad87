"""sam_core checkpoint loading (docs/method.md 2 and 9): the official layouts load strictly, "auto"
reads the type from tensor shapes, and every kind of bad checkpoint is refused with a
one-line ``CheckpointError`` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import sam_core
from sam_core import MODEL_CONFIGS, CheckpointError, build_sam, build_sam_model, infer_config
from parity import build_official_sam
from sam_fixtures import checkpoint, vit_config

# The small reduced ViT is the cheapest real checkpoint in the official layout (~10 MB).
SMALL = "vit_pad"


@pytest.fixture(scope="module")
def small_state() -> dict:
    return torch.load(checkpoint(SMALL), map_location="cpu", weights_only=True)


def _save(obj, path: Path) -> Path:
    torch.save(obj, os.fspath(path))
    return path


def _refused(path, model_type: str = "auto", **kwargs) -> str:
    """The CheckpointError message for loading ``path``; checks it names the file, one line."""
    with pytest.raises(CheckpointError) as info:
        build_sam(model_type, path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message, message
    assert "\n" not in message, message
    return message


def _meta_state(model_type: str) -> dict:
    """Official state_dict (keys, shapes, dtypes) without allocating: built on "meta"."""
    if model_type == "vit_t":  # TinyViT's constructor calls .item(); it is small anyway
        return build_official_sam("vit_t").state_dict()
    with torch.device("meta"):
        return build_official_sam(model_type).state_dict()


# ------------------------------------------------------------------------------------------
# Bad checkpoints, one test per kind
# ------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "sam_vit_b.pth"
    message = _refused(path)
    assert "not found" in message


def test_directory(tmp_path):
    path = tmp_path / "ckpt.pth"
    path.mkdir()
    assert "directory" in _refused(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert "empty" in _refused(path)


def test_truncated_file(tmp_path):
    data = checkpoint(SMALL).read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _refused(path)


def test_truncated_just_before_the_end(tmp_path):
    data = checkpoint(SMALL).read_bytes()
    path = tmp_path / "almost.pth"
    path.write_bytes(data[:-100])
    assert "truncated" in _refused(path)


# Seeds chosen so the weights-only unpickler fails in each of its ways: bad opcode (0, 1),
# IndexError (17), UnicodeDecodeError (54), KeyError (62) on this torch version.
@pytest.mark.parametrize("seed", [0, 1, 17, 54, 62])
def test_random_bytes_are_not_a_checkpoint(tmp_path, seed):
    path = tmp_path / f"random{seed}.pth"
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    message = _refused(path)
    assert "not a PyTorch checkpoint" in message
    assert "code" not in message  # random bytes are garbage, not a pickle with code


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello world\nthis is not a checkpoint\n")
    message = _refused(path)
    assert "not a PyTorch checkpoint" in message


def test_image_file_is_not_a_checkpoint(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.pth"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="PNG")
    assert "not a PyTorch checkpoint" in _refused(path)


class _RunsCode:
    """Unpickling this calls os.system (a marker file shows whether it ever ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(tmp_path, small_state):
    marker = tmp_path / "code_ran"
    path = _save({**small_state, "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    message = _refused(path)
    assert "code" in message and "refused" in message
    assert not marker.exists(), "loading the checkpoint executed its pickled code"


def test_pickle_with_code_only_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = _save(_RunsCode(marker), tmp_path / "evil_object.pt")
    message = _refused(path)
    assert "code" in message and "refused" in message
    assert not marker.exists()


def test_non_dict(tmp_path):
    path = _save([torch.zeros(3), torch.ones(2)], tmp_path / "list.pth")
    assert "not a SAM checkpoint" in _refused(path)


def test_dict_without_tensors(tmp_path):
    path = _save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    assert "not a SAM checkpoint" in _refused(path)


def test_dict_of_other_tensors(tmp_path):
    path = _save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    assert "not a SAM checkpoint" in _refused(path)


def test_wrong_model_type_names_the_file_type(tmp_path):
    message = _refused(checkpoint("vit_t"), "vit_b")
    assert "vit_t checkpoint" in message and "vit_b" in message
    message = _refused(checkpoint(SMALL), "vit_t")
    assert "custom checkpoint" in message and "not vit_t" in message


def test_missing_keys_are_listed(tmp_path, small_state):
    dropped = ["mask_decoder.iou_token.weight", "prompt_encoder.no_mask_embed.weight"]
    state = {k: v for k, v in small_state.items() if k not in dropped}
    path = _save(state, tmp_path / "missing_keys.pth")
    message = _refused(path)
    assert "2 missing keys" in message
    assert all(name in message for name in dropped)


def test_many_missing_keys_are_summarized(tmp_path, small_state):
    state = {k: v for k, v in small_state.items() if not k.startswith("mask_decoder.")}
    path = _save(state, tmp_path / "no_decoder.pth")
    message = _refused(path)
    n = sum(k.startswith("mask_decoder.") for k in small_state)
    assert f"{n} missing keys" in message
    assert message.count("mask_decoder.") <= 5  # "a few" names, not all of them
    assert len(message) < 600


def test_unexpected_keys_are_listed(tmp_path, small_state):
    extra = {"mask_decoder.extra_head.weight": torch.zeros(4), "adapter.bias": torch.zeros(2)}
    path = _save({**small_state, **extra}, tmp_path / "extra_keys.pth")
    message = _refused(path)
    assert "2 unexpected keys" in message
    assert all(name in message for name in extra)


def test_shape_mismatch(tmp_path, small_state):
    state = dict(small_state)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = _save(state, tmp_path / "bad_shape.pth")
    message = _refused(path)
    assert "mask_decoder.iou_token.weight" in message
    assert "size mismatch" in message or "shape" in message


def test_unknown_model_type_and_auto_without_checkpoint():
    with pytest.raises(ValueError, match="unknown model type"):
        build_sam("vit_x", checkpoint(SMALL))
    with pytest.raises(ValueError, match="auto"):
        build_sam("auto")


def test_safetensors_without_the_package(tmp_path):
    try:
        from safetensors.torch import save_file
    except ImportError:
        path = tmp_path / "model.safetensors"
        path.write_bytes(b"x" * 64)
        assert "safetensors" in _refused(path)
        return
    state = torch.load(checkpoint(SMALL), map_location="cpu", weights_only=True)
    path = tmp_path / "model.safetensors"
    save_file(state, os.fspath(path))
    sam = build_sam("auto", path)
    assert all(torch.equal(v, state[k]) for k, v in sam.state_dict().items())


# ------------------------------------------------------------------------------------------
# Good checkpoints
# ------------------------------------------------------------------------------------------


def _assert_loaded(sam: sam_core.Sam, state: dict) -> None:
    ours = sam.state_dict()
    assert ours.keys() == {k.removeprefix("module.") for k in state}
    for key, value in state.items():
        assert torch.equal(ours[key.removeprefix("module.")], value), key


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "module_prefix"])
def test_wrapped_weights_load(tmp_path, small_state, wrapper):
    if wrapper == "module_prefix":  # saved from DataParallel
        obj = {f"module.{k}": v for k, v in small_state.items()}
    else:
        obj = {wrapper: small_state, "epoch": 7}
    path = _save(obj, tmp_path / f"{wrapper}.pth")
    sam = build_sam("auto", path)
    _assert_loaded(sam, small_state)


def test_auto_infers_vit_t():
    path = checkpoint("vit_t")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert infer_config(state) == ("vit_t", MODEL_CONFIGS["vit_t"])
    for model_type in ("auto", "vit_t"):
        sam = build_sam(model_type, path)
        assert sam.model_type == "vit_t"
        _assert_loaded(sam, state)
        assert not sam.training


@pytest.mark.parametrize("name", ["vit_b_small", "vit_pad"])
def test_auto_infers_a_reduced_vit(name):
    path = checkpoint(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert infer_config(state) == ("custom", vit_config(name))
    sam = build_sam("auto", path)
    assert sam.model_type == "custom"
    encoder = sam.image_encoder
    assert len(encoder.blocks) == vit_config(name).depth
    assert [b.window_size for b in encoder.blocks] == [
        0 if i in vit_config(name).global_attn_indexes else 14 for i in range(len(encoder.blocks))]
    _assert_loaded(sam, state)
    # An explicit config for the same shapes works too.
    _assert_loaded(build_sam("vit_b", path, config=vit_config(name)), state)


@pytest.mark.parametrize("model_type", ["vit_h", "vit_l", "vit_b", "vit_t"])
def test_official_layout_of_every_model_type(model_type):
    """Same keys, shapes and dtypes as the official model, strict load, type inferred."""
    official = _meta_state(model_type)
    meta = model_type != "vit_t"
    if meta:
        with torch.device("meta"):
            ours_model = build_sam_model(MODEL_CONFIGS[model_type], model_type)
    else:
        ours_model = build_sam_model(MODEL_CONFIGS[model_type], model_type)
    ours = ours_model.state_dict()
    assert list(ours) == list(official) or set(ours) == set(official)
    for key, value in official.items():
        assert (tuple(ours[key].shape), ours[key].dtype) == (tuple(value.shape), value.dtype), key
    ours_model.load_state_dict(official, strict=True)
    assert infer_config(official) == (model_type, MODEL_CONFIGS[model_type])


def test_full_size_vit_b_file_loads(tmp_path):
    """A real ~375 MB file in the official vit_b layout: every tensor a distinct constant,
    so a weight landing under the wrong name is seen."""
    layout = _meta_state("vit_b")
    state = {k: torch.full(tuple(v.shape), float(i % 997) / 10.0, dtype=v.dtype)
             for i, (k, v) in enumerate(layout.items())}
    path = _save(state, tmp_path / "sam_vit_b_01ec64.pth")
    del layout
    try:
        sam = build_sam("auto", path)
        assert sam.model_type == "vit_b"
        _assert_loaded(sam, state)
        assert torch.equal(sam.image_encoder.blocks[11].attn.rel_pos_w,
                           state["image_encoder.blocks.11.attn.rel_pos_w"])
        del sam
        assert "vit_b checkpoint, not vit_h" in _refused(path, "vit_h")
    finally:
        path.unlink()  # pytest keeps old tmp folders; do not leave 375 MB behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_but_absent():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        sam_core.resolve_device("cuda")
    with pytest.raises(RuntimeError, match="cuda:1"):
        sam_core.resolve_device("cuda:1")
    with pytest.raises(RuntimeError, match="CUDA"):
        build_sam("auto", checkpoint(SMALL), device="cuda")
    assert sam_core.resolve_device(None) == torch.device("cpu")
    assert sam_core.resolve_device("cpu") == torch.device("cpu")
