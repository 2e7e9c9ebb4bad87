"""Small building blocks shared by the SAM network parts."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import ONEDNN_MIN_ROWS, onednn_gelu_fusion_enabled, onednn_linear_enabled


def gelu_fresh(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU of a tensor nobody else holds (a layer's fresh output), in place when no
    gradient is recorded: no new full-size buffer and one pass over memory. A channels-last
    4-D tensor is walked in storage order (as its contiguous NHWC view), which takes
    PyTorch's vectorized path; the strided 4-D walk is ~1.5x slower. Values are those of
    ``F.gelu``."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(x)
    if x.is_contiguous():
        torch.ops.aten.gelu_(x)
        return x
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        torch.ops.aten.gelu_(x.permute(0, 2, 3, 1))
        return x
    return F.gelu(x)


def activate_fresh(activation: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``activation(x)`` for a fresh ``x``, in place where that is the exact GELU."""
    if type(activation) is nn.GELU and activation.approximate == "none":
        return gelu_fresh(x)
    return activation(x)


def _onednn_route(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Float32 CPU inference with the oneDNN route on (``runtime.py``)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or any(
                p is not None and p.requires_grad for p in params)))
            and onednn_linear_enabled())


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
           padding=0, dilation=1, groups: int = 1, gelu: bool = False) -> torch.Tensor:
    """``F.conv2d`` (zero padding), through oneDNN's convolution for float32 CPU inference.
    PyTorch itself sends a 1x1 convolution of one image running on one thread to im2col +
    BLAS, which was 10-25% slower here; other convolutions it already sends to oneDNN. Keeps
    a channels-last input channels-last. ``gelu``: the exact GELU of the result, applied by
    oneDNN as the convolution writes it where that is available (one pass over memory less;
    the same values as :func:`gelu_fresh` afterwards)."""
    if not isinstance(padding, str) and _onednn_route(x, weight, bias):
        pair = torch.nn.modules.utils._pair
        if gelu and onednn_gelu_fusion_enabled():
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, pair(padding), pair(stride),
                                                           pair(dilation), groups, "gelu", [], "none")
        out = torch.ops.aten.mkldnn_convolution(x, weight, bias, pair(padding), pair(stride),
                                                pair(dilation), groups)
    else:
        out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return gelu_fresh(out) if gelu else out


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys, zero padding) whose float32 CPU
    inference goes through :func:`conv2d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose float32 CPU inference on
    many rows runs as a 1x1 convolution of the rows in oneDNN instead of the default BLAS
    (``runtime.py``); everything else, training and autograd included, is ``F.linear``.
    Results agree with ``F.linear`` to float rounding (a different summation order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() >= 2 and x.numel() >= ONEDNN_MIN_ROWS * self.in_features
                and _onednn_route(x, self.weight, self.bias)):
            # rows -> pixels of a (1, C, rows, 1) channels-last image: a view of contiguous rows
            pixels = x.reshape(1, -1, 1, self.in_features).permute(0, 3, 1, 2)
            out = conv2d(pixels, self.weight[:, :, None, None], self.bias)
            return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)


# -- windowed attention: tiling a (B, H, W, D) grid into windows and back ---------------------
def _window_pieces(height: int, width: int, window: int):
    """The rectangles of an (height, width) grid cut into window x window tiles (the last row
    and column of tiles may be partial): (grid rows, grid cols, tile rows, tile cols) slices
    and the tile shape of each, for whole tiles, the bottom strip, the right strip, the corner."""
    full_h, rest_h = divmod(height, window)
    full_w, rest_w = divmod(width, window)
    edge_h, edge_w = full_h * window, full_w * window
    pieces = [(slice(0, edge_h), slice(0, edge_w), slice(0, full_h), slice(0, full_w), window, window),
              (slice(edge_h, height), slice(0, edge_w), slice(full_h, full_h + 1), slice(0, full_w), rest_h, window),
              (slice(0, edge_h), slice(edge_w, width), slice(0, full_h), slice(full_w, full_w + 1), window, rest_w),
              (slice(edge_h, height), slice(edge_w, width), slice(full_h, full_h + 1), slice(full_w, full_w + 1),
               rest_h, rest_w)]
    return [piece for piece in pieces if piece[4] and piece[5] and piece[2].stop > piece[2].start
            and piece[3].stop > piece[3].start]


def partition_windows(grid: torch.Tensor, window: int, pad_value: torch.Tensor) -> torch.Tensor:
    """(B, H, W, D) -> (B * rows * cols, window * window, D) tiles in row-major tile order,
    the grid padded bottom/right with ``pad_value`` (D,) to whole tiles. One pass over memory:
    every piece is written straight into its tiles (pad, then partition, would be three)."""
    batch, height, width, depth = grid.shape
    rows, cols = -(-height // window), -(-width // window)
    out = grid.new_empty(batch, rows, cols, window, window, depth)
    tiles = out.permute(0, 1, 3, 2, 4, 5)  # (B, rows, window, cols, window, D), a view of ``out``
    if height % window:
        tiles[:, rows - 1, height % window:] = pad_value
    if width % window:
        tiles[:, :, :, cols - 1, width % window:] = pad_value
    for grid_h, grid_w, tile_r, tile_c, size_h, size_w in _window_pieces(height, width, window):
        source = grid[:, grid_h, grid_w]
        n_r, n_c = tile_r.stop - tile_r.start, tile_c.stop - tile_c.start
        tiles[:, tile_r, :size_h, tile_c, :size_w] = source.view(batch, n_r, size_h, n_c, size_w, depth)
    return out.view(batch * rows * cols, window * window, depth)


def merge_windows(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`partition_windows`: (B * rows * cols, window * window, D) ->
    contiguous (B, height, width, D), the padding dropped, in one pass over memory."""
    window = int(round(windows.shape[1] ** 0.5))
    depth = windows.shape[-1]
    rows, cols = -(-height // window), -(-width // window)
    batch = windows.shape[0] // (rows * cols)
    tiles = windows.view(batch, rows, cols, window, window, depth).permute(0, 1, 3, 2, 4, 5)
    out = windows.new_empty(batch, height, width, depth)
    for grid_h, grid_w, tile_r, tile_c, size_h, size_w in _window_pieces(height, width, window):
        n_r, n_c = tile_r.stop - tile_r.start, tile_c.stop - tile_c.start
        out[:, grid_h, grid_w].view(batch, n_r, size_h, n_c, size_w, depth).copy_(
            tiles[:, tile_r, :size_h, tile_c, :size_w])
    return out


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation in between: (..., C) -> (..., C)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = Linear(embedding_dim, mlp_dim)
        self.lin2 = Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(activate_fresh(self.act, self.lin1(x)))
