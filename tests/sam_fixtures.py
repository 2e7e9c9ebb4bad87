"""Shared helpers for the sam_core test modules (a plain module, imported by the tests).

Models and checkpoints are cached per test process with ``functools.lru_cache`` so that the
one full-size vit_t model (and each reduced ViT) is built and saved once for all the
``test_sam_*`` modules that need it. Checkpoints are written with the parity harness
(``reference.save_random_checkpoint``: seeded random weights in the official layout) into
one temporary folder that is removed when the process exits.

Everything "official" here is written out from the official code (``segment_anything``'s
``ResizeLongestSide`` and ``SamPredictor``), never imported from ``segment_anything.utils``
(which imports torchvision).
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image

import sam_core
from parity import build_official_sam, load_official_checkpoint, save_random_checkpoint

# Reduced ViTs: the same code paths as vit_b/l/h (windowed + global blocks, decomposed
# relative positions, window padding 64 -> 70 with window 14, neck) at ~0.5 s per pass.
SMALL_VIT_B = dict(embed_dim=96, depth=4, num_heads=2, global_attn_indexes=(1, 3))
SMALL_VIT_PAD = dict(embed_dim=64, depth=2, num_heads=4, global_attn_indexes=(1,))

#: name -> (official model type, encoder overrides, seed)
CONFIGS: Dict[str, Tuple[str, dict, int]] = {
    "vit_t": ("vit_t", {}, 0),
    "vit_b_small": ("vit_b", SMALL_VIT_B, 1),
    "vit_pad": ("vit_b", SMALL_VIT_PAD, 2),
}

IMAGE_SIZE = 1024
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

_TMP = tempfile.TemporaryDirectory(prefix="sam_fixtures_")


def tmp_dir() -> Path:
    return Path(_TMP.name)


def vit_config(name: str) -> sam_core.ViTConfig:
    """Our ViTConfig for a reduced ViT of CONFIGS (written from the overrides, not inferred)."""
    _, over, _ = CONFIGS[name]
    return sam_core.ViTConfig(embed_dim=over["embed_dim"], depth=over["depth"],
                              num_heads=over["num_heads"],
                              global_attn_indexes=tuple(over["global_attn_indexes"]),
                              window_size=over.get("window_size", 14))


@lru_cache(maxsize=None)
def checkpoint(name: str) -> Path:
    """Seeded random checkpoint in the official layout (flat {key: tensor} dict)."""
    model_type, over, seed = CONFIGS[name]
    path = tmp_dir() / f"{name}.pth"
    save_random_checkpoint(model_type, path, seed=seed, **over)
    return path


@lru_cache(maxsize=None)
def official_model(name: str) -> torch.nn.Module:
    """The official Sam with the checkpoint loaded (strict, eval caches refreshed)."""
    model_type, over, _ = CONFIGS[name]
    return load_official_checkpoint(build_official_sam(model_type, **over), checkpoint(name))


@lru_cache(maxsize=None)
def our_model(name: str) -> sam_core.Sam:
    """Our Sam loaded from the same file through the real loader with model_type="auto"."""
    return sam_core.build_sam("auto", checkpoint(name))


@lru_cache(maxsize=None)
def our_engine(name: str) -> sam_core.SamEngine:
    return sam_core.SamEngine(our_model(name))


def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """RGB uint8 (H, W, 3): smooth colour blobs plus noise (structure at several scales)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic",
                                             align_corners=False)
    pixels = (smooth + torch.randn(1, 3, height, width, generator=g) * 25).clamp(0, 255)
    return pixels[0].permute(1, 2, 0).round().to(torch.uint8).numpy().copy()


@lru_cache(maxsize=None)
def sample_image(height: int, width: int) -> np.ndarray:
    """A fixed image per size (read-only, shared)."""
    image = make_image(height, width, seed=height * 10007 + width)
    image.setflags(write=False)
    return image


@lru_cache(maxsize=None)
def our_embedding(name: str, height: int, width: int) -> sam_core.ImageEmbedding:
    """``SamEngine.encode`` of ``sample_image(height, width)`` (one encoder pass, cached)."""
    return our_engine(name).encode(np.array(sample_image(height, width)))


@lru_cache(maxsize=None)
def official_features(name: str, height: int, width: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Official encoder output (1, 256, 64, 64) and input size for ``sample_image(height, width)``."""
    official = official_model(name)
    x, input_size = official_input(official, sample_image(height, width))
    with torch.no_grad():
        return official.image_encoder(x), input_size


# ------------------------------------------------------------------------------------------
# The official pre/post-processing, written out from segment_anything
# ------------------------------------------------------------------------------------------


def official_preprocess_shape(old_h: int, old_w: int, long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """``ResizeLongestSide.get_preprocess_shape``."""
    scale = long_side * 1.0 / max(old_h, old_w)
    new_h, new_w = old_h * scale, old_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def official_apply_coords(coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
    """``ResizeLongestSide.apply_coords``: (..., 2) (x, y) original pixels -> resized frame."""
    old_h, old_w = original_size
    new_h, new_w = official_preprocess_shape(old_h, old_w)
    coords = np.array(coords, dtype=float, copy=True)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def official_apply_boxes(boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
    """``ResizeLongestSide.apply_boxes``: (B, 4) -> (B, 4)."""
    boxes = official_apply_coords(np.asarray(boxes, dtype=float).reshape(-1, 2, 2), original_size)
    return boxes.reshape(-1, 4)


def official_resize(image: np.ndarray) -> np.ndarray:
    """``ResizeLongestSide.apply_image``: torchvision ``resize`` of a PIL image = PIL bilinear."""
    new_h, new_w = official_preprocess_shape(*image.shape[:2])
    return np.array(Image.fromarray(np.asarray(image)).resize((new_w, new_h), Image.BILINEAR))


@torch.no_grad()
def official_input(official: torch.nn.Module, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """``SamPredictor.set_image`` up to the encoder: (1, 3, 1024, 1024) input and input_size."""
    resized = official_resize(image)
    tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
    return official.preprocess(tensor), tuple(tensor.shape[-2:])


@torch.no_grad()
def official_decode(official: torch.nn.Module, features: torch.Tensor, input_size, original_size,
                    points=None, labels=None, box=None, mask_input=None, multimask=True):
    """``SamPredictor.predict`` / ``predict_torch`` without thresholding.

    Returns (high-res logits (1, K, H, W), iou (1, K), low-res logits (1, K, 256, 256)).
    """
    coords = labels_t = box_t = mask_t = None
    if points is not None:
        coords = torch.as_tensor(official_apply_coords(np.asarray(points, dtype=float), original_size),
                                 dtype=torch.float)[None, :, :]
        labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int)[None, :]
    if box is not None:
        box_t = torch.as_tensor(official_apply_boxes(np.asarray(box, dtype=float), original_size),
                                dtype=torch.float)[None, :]
    if mask_input is not None:
        mask_t = torch.as_tensor(mask_input, dtype=torch.float).reshape(1, 256, 256)[None, :, :, :]
    sparse, dense = official.prompt_encoder(
        points=(coords, labels_t) if coords is not None else None, boxes=box_t, masks=mask_t)
    low, iou = official.mask_decoder(
        image_embeddings=features,
        image_pe=official.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    high = official.postprocess_masks(low, input_size, original_size)
    return high, iou, low


def make_hooks(seed: int, dim: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """PerSAM-like hooks: attn_sim (1, 1, 1, 4096) = sigmoid of a standardized smooth random
    map, target_embedding (1, 1, dim)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 8, 8, generator=g)
    z = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    z = z + 0.3 * torch.randn(1, 1, 64, 64, generator=g)
    z = (z - z.mean()) / z.std()
    attn_sim = torch.sigmoid(z).flatten(2).unsqueeze(1)  # (1, 1, 1, 4096)
    target = torch.randn(1, 1, dim, generator=g)
    return attn_sim, target


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item()
