"""The transformers layout of SAM (``SamModel.save_pretrained``: config.json + model.safetensors).

One key-mapping table, :data:`KEY_TABLE`, read in both directions: a transformers folder loads
into sam_core (the ViT dimensions come from ``config.json``, so narrower checkpoints of the same
architecture load too), and :func:`save_transformers_folder` writes an official-layout
checkpoint in the transformers layout. A hub id (``facebook/sam-vit-base``) is fetched with
huggingface_hub (``persam[hub]``), which keeps its own cache and honours ``HF_HUB_OFFLINE``.

transformers itself is never imported here; the files are read with safetensors (or
``torch.load(weights_only=True)`` for an old ``pytorch_model.bin``).

Numerical note: transformers' two-way decoder blocks use LayerNorm eps 1e-6 (the
``layer_norm_eps`` of ``mask_decoder_config``), the official SAM decoder PyTorch's default
1e-5. persam keeps SAM's 1e-5 (the official checkpoints were trained with it); the two differ
by ~1e-5 relative in decoder outputs.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping

import torch

from .build import CheckpointError, ViTConfig

# (official prefix, transformers prefix). {n} and {m} stand for block / layer numbers. Read
# top to bottom, first match wins; keys that match no row are the same in both layouts
# (attention projections, rel_pos_h/w, mlp.lin1/lin2, iou_token, mask_tokens, no_mask_embed,
# not_a_point_embed).
KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.blocks.{n}.norm1.", "vision_encoder.layers.{n}.layer_norm1."),
    ("image_encoder.blocks.{n}.norm2.", "vision_encoder.layers.{n}.layer_norm2."),
    ("image_encoder.blocks.{n}.", "vision_encoder.layers.{n}."),
    ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
    ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
    ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
     "shared_image_embedding.positional_embedding"),
    ("prompt_encoder.point_embeddings.{n}.", "prompt_encoder.point_embed.{n}."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("mask_decoder.transformer.layers.{n}.norm{m}.", "mask_decoder.transformer.layers.{n}.layer_norm{m}."),
    ("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
    ("mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    ("mask_decoder.output_hypernetworks_mlps.{n}.layers.0.", "mask_decoder.output_hypernetworks_mlps.{n}.proj_in."),
    ("mask_decoder.output_hypernetworks_mlps.{n}.layers.1.", "mask_decoder.output_hypernetworks_mlps.{n}.layers.0."),
    ("mask_decoder.output_hypernetworks_mlps.{n}.layers.2.", "mask_decoder.output_hypernetworks_mlps.{n}.proj_out."),
    ("mask_decoder.iou_prediction_head.layers.0.", "mask_decoder.iou_prediction_head.proj_in."),
    ("mask_decoder.iou_prediction_head.layers.1.", "mask_decoder.iou_prediction_head.layers.0."),
    ("mask_decoder.iou_prediction_head.layers.2.", "mask_decoder.iou_prediction_head.proj_out."),
)
# transformers ties the prompt encoder's copy of the Fourier matrix to shared_image_embedding
# and usually saves only one of the two.
_HF_TIED_COPY = "prompt_encoder.shared_embedding.positional_embedding"

# SAM's prompt encoder / decoder sizes; a transformers config that differs cannot load here.
_FIXED = {
    "vision_config": {"image_size": 1024, "patch_size": 16, "num_channels": 3, "output_channels": 256,
                      "use_abs_pos": True, "use_rel_pos": True, "qkv_bias": True, "hidden_act": "gelu",
                      "num_pos_feats": 128},
    "prompt_encoder_config": {"hidden_size": 256, "image_size": 1024, "patch_size": 16,
                              "image_embedding_size": 64, "mask_input_channels": 16,
                              "num_point_embeddings": 4, "hidden_act": "gelu"},
    "mask_decoder_config": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
                            "mlp_dim": 2048, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
                            "iou_head_depth": 3, "iou_head_hidden_dim": 256, "hidden_act": "relu"},
}
# transformers' SamVisionConfig defaults (a config.json may leave any of them out).
_VISION_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "global_attn_indexes": [2, 5, 8, 11], "window_size": 14, "mlp_ratio": 4.0}


def _compile(pattern: str) -> re.Pattern:
    escaped = re.escape(pattern).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{m\}", r"(?P<m>\d+)")
    return re.compile("^" + escaped)


_TO_HF = tuple((_compile(official), hf) for official, hf in KEY_TABLE)
_TO_OFFICIAL = tuple((_compile(hf), official) for official, hf in KEY_TABLE)


def _rename(key: str, rules) -> str:
    for pattern, template in rules:
        found = pattern.match(key)
        if found:
            return template.format(**found.groupdict()) + key[found.end():]
    return key


def official_key_to_hf(key: str) -> str:
    return _rename(key, _TO_HF)


def hf_key_to_official(key: str) -> str:
    return _rename(key, _TO_OFFICIAL)


def is_transformers_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(("vision_encoder.", "shared_image_embedding.")) for key in state)


def hf_to_official(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """transformers SamModel tensors -> official SAM names (same tensors, renamed)."""
    state = dict(state)
    copy = state.pop(_HF_TIED_COPY, None)
    main = "shared_image_embedding.positional_embedding"
    if copy is not None:
        if main not in state:
            state[main] = copy
        elif not torch.equal(copy, state[main]):
            raise CheckpointError(f"{source}: {_HF_TIED_COPY} differs from {main} (they are one tensor in SAM)")
    converted = {}
    for key, tensor in state.items():
        name = hf_key_to_official(key)
        if name in converted:
            raise CheckpointError(f"{source}: two tensors map to {name}")
        converted[name] = tensor
    return converted


def official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SAM tensors -> transformers SamModel names (the inverse of :func:`hf_to_official`)."""
    return {official_key_to_hf(key): tensor for key, tensor in state.items()}


def vit_config_from_hf(config: Mapping, source: str = "config.json") -> ViTConfig:
    """The image encoder dimensions of a transformers SamConfig dict; other sizes must be SAM's."""
    if config.get("model_type", "sam") != "sam":
        raise CheckpointError(f"{source} describes a {config.get('model_type')!r} model, not SAM (SamModel)")
    for part, fixed in _FIXED.items():
        given = config.get(part) or {}
        for key, value in fixed.items():
            if key in given and given[key] != value:
                raise CheckpointError(f"{source}: {part}.{key} = {given[key]!r} is not supported "
                                      f"(SAM uses {value!r})")
    vision = {**_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    try:
        embed_dim = int(vision["hidden_size"])
        depth = int(vision["num_hidden_layers"])
        heads = int(vision["num_attention_heads"])
        global_idx = tuple(int(i) for i in vision["global_attn_indexes"])
        window = int(vision["window_size"])
        mlp_dim = vision.get("mlp_dim")
        mlp_dim = int(embed_dim * float(vision["mlp_ratio"])) if mlp_dim is None else int(mlp_dim)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: vision_config is not readable ({exc})") from None
    if mlp_dim != 4 * embed_dim:
        raise CheckpointError(f"{source}: vision_config.mlp_dim {mlp_dim} is not 4 x hidden_size "
                              f"{embed_dim}, which SAM's ViT assumes")
    if heads <= 0 or embed_dim % heads:
        raise CheckpointError(f"{source}: num_attention_heads {heads} does not divide hidden_size {embed_dim}")
    if any(not 0 <= i < depth for i in global_idx):
        raise CheckpointError(f"{source}: global_attn_indexes {list(global_idx)} outside 0..{depth - 1}")
    return ViTConfig(embed_dim, depth, heads, global_idx, window)


def hf_config_from_vit(config: ViTConfig) -> dict:
    """A transformers SamConfig dict for a SAM ViT (the inverse of :func:`vit_config_from_hf`)."""
    vision = {**_FIXED["vision_config"], "model_type": "sam_vision_model",
              "hidden_size": config.embed_dim, "num_hidden_layers": config.depth,
              "num_attention_heads": config.num_heads, "global_attn_indexes": list(config.global_attn_indexes),
              "window_size": config.window_size, "mlp_dim": 4 * config.embed_dim, "mlp_ratio": 4.0,
              "layer_norm_eps": 1e-6}
    return {"architectures": ["SamModel"], "model_type": "sam", "vision_config": vision,
            "prompt_encoder_config": {**_FIXED["prompt_encoder_config"], "model_type": "sam_prompt_encoder",
                                      "layer_norm_eps": 1e-6},
            "mask_decoder_config": {**_FIXED["mask_decoder_config"], "model_type": "sam_mask_decoder",
                                    "layer_norm_eps": 1e-6}}


def is_transformers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"checkpoint {path}: reading .safetensors needs the 'safetensors' package "
                              f"(pip install 'persam[hub]')") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file "
                              f"({str(exc).splitlines()[0][:120]})") from None


def read_transformers_folder(folder: Path) -> tuple[dict[str, torch.Tensor], ViTConfig]:
    """Official-layout tensors and the ViT config of a ``save_pretrained`` folder."""
    from .build import read_state_dict

    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {config_path} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {config_path} is not a transformers config (not a JSON object)")
    vit = vit_config_from_hf(config, source=f"checkpoint {config_path}")
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        weights, state = folder / "model.safetensors", _load_safetensors(folder / "model.safetensors")
    elif index.is_file():  # sharded: {"weight_map": {tensor name: shard file}}
        weights, state = index, {}
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {index} is not a safetensors index ({exc})") from None
        for shard in shards:
            state.update(_load_safetensors(folder / shard))
    elif (folder / "pytorch_model.bin").is_file():
        weights = folder / "pytorch_model.bin"
        state = read_state_dict(weights)
    else:
        raise CheckpointError(f"checkpoint {folder} has a config.json but no model.safetensors "
                              f"(or pytorch_model.bin)")
    if not state:
        raise CheckpointError(f"checkpoint {weights} holds no tensors")
    return hf_to_official(state, source=f"checkpoint {weights}"), vit


def hub_snapshot(repo_id: str) -> Path:
    """A local folder with ``config.json`` and the weights of a hub repository (hub cache)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise CheckpointError(f"checkpoint {repo_id} is not a file or model name; loading it as a Hugging "
                              f"Face hub id needs huggingface_hub (pip install 'persam[hub]')") from None
    from .weights import DownloadError, offline

    try:
        folder = snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors",
                                                            "model.safetensors.index.json"],
                                   local_files_only=offline())
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise CheckpointError(f"checkpoint {repo_id} not found (not a file, model name, or readable "
                              f"Hugging Face hub repository: {type(exc).__name__})") from None
    except LocalEntryNotFoundError:
        why = "PERSAM_OFFLINE=1" if offline() else "offline or no connection to the hub"
        raise DownloadError(f"{repo_id} is not in the Hugging Face cache and cannot be downloaded "
                            f"({why})") from None
    except Exception as exc:  # network and hub errors: one line
        raise DownloadError(f"cannot download {repo_id} from the Hugging Face hub "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    return Path(folder)


def save_transformers_folder(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write an official-layout SAM ViT checkpoint as a transformers ``SamModel`` folder."""
    from persam_files import atomic_write, write_json

    from .build import infer_config, read_state_dict

    source = Path(checkpoint)
    state = read_state_dict(source)
    try:
        model_type, config = infer_config(state)
    except (CheckpointError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {source} is not a SAM checkpoint: {exc}") from None
    if not isinstance(config, ViTConfig):
        raise CheckpointError(f"checkpoint {source} is {model_type} (TinyViT), which transformers' SamModel "
                              f"cannot hold")
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise CheckpointError("writing model.safetensors needs the 'safetensors' package "
                              "(pip install 'persam[hub]')") from None
    out = Path(out_dir)
    tensors = {k: v.contiguous() for k, v in official_to_hf(state).items()}
    atomic_write(out / "model.safetensors",
                 lambda temp: save_file(tensors, str(temp), metadata={"format": "pt"}))
    write_json(out / "config.json", hf_config_from_vit(config))
    return out
