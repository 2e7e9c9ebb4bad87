"""Model configurations as data, the ``build_sam`` factory and strict checkpoint loading."""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import torch
from torch import nn

from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ViTConfig:
    """SAM ViT image encoder hyper-parameters."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM TinyViT image encoder hyper-parameters."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)


EncoderConfig = Union[ViTConfig, TinyViTConfig]

# The released models (checkpoint file names in comments).
MODEL_CONFIGS: dict[str, EncoderConfig] = {
    "vit_h": ViTConfig(1280, 32, 16, (7, 15, 23, 31)),  # sam_vit_h_4b8939.pth
    "vit_l": ViTConfig(1024, 24, 16, (5, 11, 17, 23)),  # sam_vit_l_0b3195.pth
    "vit_b": ViTConfig(768, 12, 12, (2, 5, 8, 11)),  # sam_vit_b_01ec64.pth
    "vit_t": TinyViTConfig(),  # mobile_sam.pt
}
MODEL_TYPES = tuple(MODEL_CONFIGS)


def build_image_encoder(config: EncoderConfig) -> nn.Module:
    if isinstance(config, TinyViTConfig):
        return TinyViT(img_size=1024, embed_dims=config.embed_dims, depths=config.depths,
                       num_heads=config.num_heads, window_sizes=config.window_sizes)
    return ImageEncoderViT(img_size=1024, embed_dim=config.embed_dim, depth=config.depth,
                           num_heads=config.num_heads, window_size=config.window_size,
                           global_attn_indexes=tuple(config.global_attn_indexes))


def build_sam_model(config: EncoderConfig, model_type: str = "custom") -> Sam:
    """Build a SAM with random weights from an encoder config (prompt encoder and decoder are shared)."""
    prompt_embed_dim = 256
    return Sam(
        image_encoder=build_image_encoder(config),
        prompt_encoder=PromptEncoder(embed_dim=prompt_embed_dim, image_embedding_size=(64, 64),
                                     input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            transformer_dim=prompt_embed_dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        model_type=model_type,
    ).eval()


def _describe(path: Path) -> str:
    return f"checkpoint {path}"


def read_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, safely.

    ``torch.load(weights_only=True)`` refuses pickled code. A dict holding the weights under
    ``"model"`` or ``"state_dict"`` is unwrapped; a ``module.`` prefix (DataParallel) is dropped.
    """
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"{_describe(path)} not found")
    if path.is_dir():
        raise CheckpointError(f"{_describe(path)} is a directory, not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{_describe(path)} is empty")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointError(f"{_describe(path)}: reading .safetensors needs the 'safetensors' package") from exc
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{_describe(path)} is truncated or corrupt (not a readable "
                                  "safetensors file)") from exc
    else:
        with open(path, "rb") as handle:
            head = handle.read(4)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            if "unsupported global" in text.lower():  # a pickled class or function, not a bad byte
                found = re.search(r"GLOBAL:?\s+([\w.]+)", text, flags=re.IGNORECASE)
                detail = f" ({found.group(1)})" if found else ""
                raise CheckpointError(
                    f"{_describe(path)} contains pickled code or objects, not only tensors; refused "
                    f"for safety{detail}"
                ) from exc
            raise CheckpointError(f"{_describe(path)} is not a PyTorch checkpoint") from exc
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError,
                TypeError, AttributeError, io.UnsupportedOperation) as exc:
            # KeyError/IndexError: bad memo refs in garbage; TypeError/AttributeError: a flipped
            # byte that hands torch's tensor rebuild arguments of the wrong kind
            if head[:2] == b"PK":  # torch's zip reader text (miniz internals) means nothing to users
                raise CheckpointError(f"{_describe(path)} is truncated or corrupt (not a complete PyTorch "
                                      "checkpoint; download it again)") from exc
            if isinstance(exc, EOFError):
                raise CheckpointError(f"{_describe(path)} is truncated") from exc
            raise CheckpointError(f"{_describe(path)} is not a PyTorch checkpoint") from exc
    if isinstance(state, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        if isinstance(state, Mapping) and "target_feature" in state and "method" in state:
            # persam's own concept file (sam_core knows only its keys, not the class)
            raise CheckpointError(f"{_describe(path)} is a persam concept file, not a SAM checkpoint: "
                                  "load it with Concept.load (or --concept), and give the SAM checkpoint here")
        raise CheckpointError(f"{_describe(path)} is not a SAM checkpoint (expected a dict of named tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, EncoderConfig]:
    """Model type and encoder config from tensor names and shapes.

    Returns ("vit_t" | "vit_b" | "vit_l" | "vit_h", config) for the released shapes, or
    ("custom", config) for another ViT size; raises CheckpointError if it is not SAM at all.
    """
    if "image_encoder.patch_embed.seq.0.c.weight" in state_dict:
        return "vit_t", MODEL_CONFIGS["vit_t"]
    pos = state_dict.get("image_encoder.pos_embed")
    if pos is None or pos.ndim != 4:
        raise CheckpointError("no SAM image encoder weights (image_encoder.pos_embed or TinyViT patch_embed)")
    embed_dim = int(pos.shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks."))
    head_dim = int(state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    grid_rows = 2 * int(pos.shape[1]) - 1
    global_idx, window = [], 14
    for i in range(depth):
        rows = int(state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0])
        if rows == grid_rows:
            global_idx.append(i)
        else:
            window = (rows + 1) // 2
    config = ViTConfig(embed_dim, depth, embed_dim // head_dim, tuple(global_idx), window)
    for name, known in MODEL_CONFIGS.items():
        if known == config:
            return name, config
    return "custom", config


def _key_problem(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def _load_checkpoint(checkpoint: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor], ViTConfig | None]:
    """(local path, official-layout tensors, ViT config of a transformers folder or None)."""
    from .hf_convert import (hf_to_official, is_transformers_folder, is_transformers_state_dict,
                             read_transformers_folder)
    from .weights import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    if is_transformers_folder(path):
        state_dict, hf_config = read_transformers_folder(path)
        return path, state_dict, hf_config
    state_dict = read_state_dict(path)
    if is_transformers_state_dict(state_dict):  # a bare model.safetensors: shapes tell the size
        state_dict = hf_to_official(state_dict, source=_describe(path))
    return path, state_dict, None


def build_sam(model_type: str = "auto", checkpoint: str | os.PathLike | None = None,
              device: str | torch.device | None = None, config: EncoderConfig | None = None) -> Sam:
    """Build a SAM model and load its checkpoint strictly.

    checkpoint: a file in the official layout (``.pth``/``.pt``, or ``.safetensors``), a model
    name ("vit_t", "vit_b", "vit_l", "vit_h" or a ``PERSAM_MODELS_FILE`` entry; downloaded and
    checksummed on first use, see ``weights.py``), a transformers ``SamModel`` folder
    (config.json + model.safetensors) or a Hugging Face hub id of one (``persam[hub]``).
    model_type: "vit_h", "vit_l", "vit_b", "vit_t", or "auto" (read from the checkpoint's
    tensor shapes). ``config`` overrides the encoder hyper-parameters (reduced test models).
    device: "cpu", "cuda", "cuda:1", ... (default: cpu). Without a checkpoint the weights are
    random.
    """
    device = resolve_device(device)
    if model_type != "auto" and model_type not in MODEL_CONFIGS:
        raise ValueError(f"unknown model type {model_type!r}; choose from auto, {', '.join(MODEL_TYPES)}")
    state_dict = None
    if checkpoint is not None:
        path, state_dict, hf_config = _load_checkpoint(checkpoint)
        checkpoint = path
        try:
            found_type, found_config = infer_config(state_dict)
            if hf_config is not None:  # the folder's config.json states the dimensions
                found_config = hf_config
                found_type = next((name for name, known in MODEL_CONFIGS.items() if known == hf_config),
                                  "custom")
        except (CheckpointError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{_describe(path)} is not a SAM checkpoint: {exc}") from exc
        if model_type == "auto":
            model_type = found_type
            config = config or found_config
        elif config is None and found_type != model_type:
            raise CheckpointError(f"{_describe(path)} is a {found_type} checkpoint, not {model_type}"
                                  + (f" (encoder {found_config})" if found_type == "custom" else ""))
    elif model_type == "auto":
        raise ValueError("model_type='auto' needs a checkpoint to read the type from")
    sam = build_sam_model(config or MODEL_CONFIGS[model_type], model_type=model_type)
    if state_dict is not None:
        expected = set(sam.state_dict())
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise CheckpointError(f"{_describe(Path(checkpoint))} does not match {model_type}: "
                                  + _key_problem(missing, unexpected))
        try:
            sam.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:  # shape mismatches
            lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
            raise CheckpointError(f"{_describe(Path(checkpoint))} does not fit {model_type}: "
                                  + ("; ".join(lines[:2]) or str(exc)[:200])) from exc
    return sam.to(device).eval()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device, with a clear error when CUDA is asked for but absent."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError:  # torch's text lists its internal device types; say what we support
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} was asked for but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {device} was asked for but this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device} was asked for but MPS (Apple GPU) is not available on this machine")
    return device
