"""MobileSAM's TinyViT image encoder (``vit_t``).

Input (B, 3, 1024, 1024) normalized and padded images; output (B, 256, 64, 64).
Four stages: a convolutional (MBConv) stage at 1/4 resolution, then three stages of
windowed attention with a learned relative-position bias. Parameter names follow the
MobileSAM release (``mobile_sam.pt``) so it loads strictly, including the unused
ImageNet classification head (``norm_head``, ``head``).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2d, LayerNorm2d, Linear, conv2d, gelu_fresh, merge_windows, partition_windows


class Conv2d_BN(nn.Sequential):  # noqa: N801 - the released checkpoints use this name
    """Convolution without bias followed by BatchNorm (keys ``c.*`` and ``bn.*``)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding,
                                       groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))

    def forward(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """The convolution + BatchNorm; ``gelu``: then the exact GELU (in place, or fused
        into the convolution by ``common.conv2d``)."""
        if self.training:
            out = super().forward(x)
            return F.gelu(out) if gelu else out
        # Inference: fold BatchNorm into the convolution (one pass over the activations
        # instead of two). Recomputed per call from the current weights, so a checkpoint
        # loaded later is always what is used; the weights are tiny next to the activations.
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, gelu=gelu)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, _, conv2 = self.seq  # seq[1] is the GELU, applied by conv1 (Conv2d_BN's gelu)
        return conv2(conv1(x, gelu=True))


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise 3x3, project 1x1) on (B, C, H, W)."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = Conv2d_BN(chans, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, chans, 1)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # act1-3 are GELUs: act1 and act2 applied by the convolutions (Conv2d_BN's gelu),
        # act3 in place on the fresh sum (common.gelu_fresh)
        y = self.conv2(self.conv1(x, gelu=True), gelu=True)
        y = self.conv3(y)
        return gelu_fresh(y + x)


class PatchMerging(nn.Module):
    """Downsampling between stages: (B, C, H, W) or (B, H*W, C) -> (B, H'*W', C_out).

    ``stride`` is 1 for the merge into the last stage, which keeps the 64x64 grid SAM's
    decoder needs.
    """

    def __init__(self, input_resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # (B, H*W, C) -> a channels-last (B, C, H, W) view, no copy
            height, width = self.input_resolution
            x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = self.conv1(x, gelu=True)  # self.act, applied by the convolutions (Conv2d_BN's gelu)
        x = self.conv2(x, gelu=True)
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks then a merge."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, out_dim: int,
                 expand_ratio: float, merge_stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(input_resolution, dim, out_dim, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    """LayerNorm then two linear layers: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_fresh(self.fc1(self.norm(x))))  # self.act, in place


class Attention(nn.Module):
    """Window attention with a learned bias per head and per (|dy|, |dx|) offset.

    Input/output (B, N, C) with N = window*window tokens.
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offset_ids: dict[tuple[int, int], int] = {}
        index = [
            offset_ids.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offset_ids))
            for p in points
            for q in points
        ]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offset_ids)))
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(index, dtype=torch.long).view(len(points), len(points)),
            persistent=False,
        )

    def _bias(self) -> torch.Tensor:
        """(1, heads, N, N) bias gathered from the per-offset table.

        Cached for inference, keyed on the table's version counter and storage, so loading a
        checkpoint (an in-place copy) invalidates it -- unlike a cache built at ``eval()``.
        """
        table = self.attention_biases
        if self.training or torch.is_grad_enabled():
            return table[:, self.attention_bias_idxs].unsqueeze(0)
        key = (table._version, table.data_ptr(), table.device, table.dtype)
        if getattr(self, "_bias_key", None) != key:
            self._bias_cache = table[:, self.attention_bias_idxs].unsqueeze(0).contiguous()
            self._bias_key = key
        return self._bias_cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv_of(x)))

    def qkv_of(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) tokens -> (..., 3C) their q, k, v."""
        return self.qkv(self.norm(x))

    def qkv_of_zeros(self) -> torch.Tensor:
        """(3C,) the q, k, v of a zero token (the padding of a partial window)."""
        return self.qkv_of(self.qkv.weight.new_zeros(self.qkv.in_features))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C) q, k, v of B windows -> (B, N, C) attention output, before ``proj``."""
        batch, tokens, _ = qkv.shape
        # The released layout interleaves q, k, v per head: (B, N, heads, 3 * key_dim).
        q, k, v = qkv.view(batch, tokens, self.num_heads, -1).split(self.key_dim, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias())
        return out.transpose(1, 2).reshape(batch, tokens, -1)


class TinyViTBlock(nn.Module):
    """Window attention, depthwise 3x3 'local' convolution, MLP; on (B, H*W, C)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int,
                 window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, (window_size, window_size))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        batch, tokens, chans = x.shape
        window = self.window_size
        shortcut = x
        if height == window and width == window:
            x = self.attn(x)
        else:
            # Zero padding to whole windows, as released; but the padded tokens' q, k, v are
            # all the same vector (that of a zero token), so only the real tokens go through
            # the norm and the qkv projection, and only they through the output projection.
            qkv = self.attn.qkv_of(x).view(batch, height, width, -1)
            windows = partition_windows(qkv, window, self.attn.qkv_of_zeros())
            x = self.attn.proj(merge_windows(self.attn.attend(windows), height, width).view(batch, tokens, chans))
        x = shortcut + x
        # (B, H*W, C) is channels-last (B, C, H, W) memory: convolve on a view and come back
        # without copying (the convolution keeps the channels-last layout).
        x = self.local_conv(x.view(batch, height, width, chans).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).reshape(batch, tokens, chans)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks, then a merge (except in the last stage)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int,
                 window_size: int, mlp_ratio: float, local_conv_size: int,
                 out_dim: int | None, merge_stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = (
            PatchMerging(input_resolution, dim, out_dim, merge_stride) if out_dim is not None else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """MobileSAM encoder: (B, 3, img_size, img_size) -> (B, 256, img_size/16, img_size/16)."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        base = img_size // 4
        # Stage i works at base / 2**i, except that the last merge keeps the resolution.
        resolutions = [base // 2 ** min(i, len(depths) - 2) for i in range(len(depths))]
        self.grid = resolutions[-1]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            res = (resolutions[i], resolutions[i])
            last = i == len(depths) - 1
            out_dim = None if last else embed_dims[i + 1]
            merge_stride = 1 if i == len(depths) - 2 else 2
            if i == 0:
                layer: nn.Module = ConvLayer(embed_dims[0], res, depth, embed_dims[1],
                                             mbconv_expand_ratio, merge_stride)
            else:
                layer = BasicLayer(embed_dims[i], res, depth, num_heads[i], window_sizes[i],
                                   mlp_ratio, local_conv_size, out_dim, merge_stride)
            self.layers.append(layer)
        # Classification head of the ImageNet pre-training: unused, kept so the
        # released checkpoint loads with strict=True.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last memory throughout: faster convolutions, and the token layout
        # (B, H*W, C) of the attention stages is the same memory, so switching is free.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        batch, _, chans = x.shape
        x = x.view(batch, self.grid, self.grid, chans).permute(0, 3, 1, 2)
        return self.neck(x).contiguous()
