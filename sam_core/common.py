"""Small building blocks shared by the SAM network parts."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import ONEDNN_MIN_ROWS, onednn_linear_enabled


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


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose float32 CPU inference on
    many rows runs through oneDNN's matmul instead of the default BLAS (``runtime.py``);
    everything else, training and autograd included, is ``F.linear``. Results agree with
    ``F.linear`` to float rounding (a different summation order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() >= 2
                and x.numel() >= ONEDNN_MIN_ROWS * self.in_features
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and onednn_linear_enabled()):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


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
