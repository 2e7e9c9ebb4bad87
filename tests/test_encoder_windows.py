"""The encoders' window tiling (``sam_core.common.partition_windows`` / ``merge_windows``, used
by TinyViT and the ViT) against the plain pad-then-reshape construction it replaces."""
from __future__ import annotations

import pytest
import torch

from sam_core.common import merge_windows, partition_windows


def _reference_partition(grid, window, pad_value):
    batch, height, width, depth = grid.shape
    pad_b, pad_r = -height % window, -width % window
    padded = pad_value.expand(batch, height + pad_b, width + pad_r, depth).clone()
    padded[:, :height, :width] = grid
    rows, cols = (height + pad_b) // window, (width + pad_r) // window
    tiles = padded.view(batch, rows, window, cols, window, depth).transpose(2, 3)
    return tiles.reshape(batch * rows * cols, window * window, depth)


@pytest.mark.parametrize("height,width,window", [
    (14, 14, 7), (16, 16, 7), (64, 64, 14), (64, 64, 7), (5, 12, 7), (20, 9, 4), (3, 3, 7), (13, 21, 7)])
@pytest.mark.parametrize("batch", [1, 2])
def test_partition_and_merge_equal_the_padded_reshape(height, width, window, batch):
    generator = torch.Generator().manual_seed(height * 100 + width)
    grid = torch.randn(batch, height, width, 6, generator=generator)
    pad_value = torch.randn(6, generator=generator)
    windows = partition_windows(grid, window, pad_value)
    want = _reference_partition(grid, window, pad_value)
    assert windows.shape == want.shape and windows.is_contiguous()
    assert torch.equal(windows, want)  # copies only: bit for bit
    merged = merge_windows(windows, height, width)
    assert merged.is_contiguous() and torch.equal(merged, grid)


def test_merge_reads_only_real_cells():
    grid = torch.arange(2 * 5 * 12 * 3, dtype=torch.float32).view(2, 5, 12, 3)
    windows = partition_windows(grid, 7, torch.full((3,), float("nan")))
    assert torch.isnan(windows).any()  # the padding is there ...
    assert torch.equal(merge_windows(windows, 5, 12), grid)  # ... and never read back
