"""Shared fixtures: seeded random checkpoints in the official layout, and the sample data.

Random weights test the machinery (parity, shapes, formats), never accuracy.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from parity import save_random_checkpoint

PERSEG_MINI = Path(__file__).resolve().parents[1] / "examples" / "perseg-mini"
# A reduced ViT (vit_b layout, fewer and narrower blocks) keeps end-to-end tests fast.
SMALL_VIT = dict(embed_dim=96, depth=4, num_heads=2, global_attn_indexes=(1, 3))


@pytest.fixture(scope="session")
def perseg_mini() -> Path:
    if not (PERSEG_MINI / "Images").is_dir():
        pytest.fail(f"sample data not found at {PERSEG_MINI}")
    return PERSEG_MINI


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A reduced ViT SAM checkpoint (official vit_b key layout), seed 0."""
    path = tmp_path_factory.mktemp("ckpt") / "small_vit.pth"
    save_random_checkpoint("vit_b", path, seed=0, **SMALL_VIT)
    return path


@pytest.fixture(scope="session")
def vit_t_checkpoint(tmp_path_factory) -> Path:
    """A full-size MobileSAM (vit_t) checkpoint with random weights, seed 0."""
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    save_random_checkpoint("vit_t", path, seed=0)
    return path


@pytest.fixture(scope="session")
def small_sam(small_checkpoint):
    from sam_core import build_sam

    return build_sam("auto", small_checkpoint)
