"""SAM's mask decoder: image embedding + prompt embeddings -> mask logits and scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, activate_fresh
from .transformer import TwoWayTransformer


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + dims, dims + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompts.

    image_embeddings (1 or B, C, 64, 64), image_pe (1, C, 64, 64), sparse prompt
    embeddings (B, N, C), dense prompt embeddings (1 or B, C, 64, 64) ->
    low-res mask logits (B, K, 256, 256) and predicted IoU scores (B, K), with K = 3 when
    ``multimask_output`` else 1. ``attn_sim`` and ``target_embedding`` are PerSAM's
    optional hooks, passed to the transformer (see ``transformer.py``).
    """

    def __init__(self, *, transformer_dim: int, transformer: TwoWayTransformer,
                 num_multimask_outputs: int = 3, activation: type[nn.Module] = nn.GELU,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, attn_sim: torch.Tensor | None = None,
                target_embedding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                  dense_prompt_embeddings, attn_sim, target_embedding, selected)

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                      attn_sim: torch.Tensor | None = None,
                      target_embedding: torch.Tensor | None = None,
                      mask_tokens: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """The selected mask tokens' outputs (all four by default): (B, K, 256, 256) logits
        and (B, K) scores. Only the selected masks are computed."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        # One image and several prompt sets: image-side tensors broadcast against the B token
        # sets. When the dense prompt is shared too (batch 1), the image stays batch 1 until the
        # first block's image-to-token attention, so its projections are computed once.
        src = image_embeddings + dense_prompt_embeddings
        _, _, height, width = src.shape

        # Only the IoU token and the selected mask tokens are read: the rest skip the final attention.
        token_ids = list(range(self.num_mask_tokens))[mask_tokens]
        hs, src = self.transformer(src, image_pe, tokens, attn_sim=attn_sim, target_embedding=target_embedding,
                                   final_tokens=[0] + [1 + i for i in token_ids])
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, mask_tokens]
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + k, :])
                                for k, i in enumerate(token_ids)], dim=1)
        upscaled = self.upscale(src)  # (B, h*w*16, C/8), pixels in 4x4 blocks per embedding cell
        masks = torch.bmm(hyper_in, upscaled.transpose(1, 2))  # (B, K, h*w*16)
        return blocks_to_maps(masks, height, width), iou_pred

    def upscale(self, src: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` on the transformer's image tokens (B, h*w, C) -> (B, h*w*16, C/8).

        A 2x2 transposed convolution with stride 2 maps each input pixel to its own 2x2 output
        block, so it is one matrix product per pixel; run on the token rows as they are, with
        the 2x2 (then 4x4) blocks kept as rows, there are no layout copies and the LayerNorm
        is over the last axis. ``predict_masks`` puts the blocks in place at the end, on the
        few mask maps only.
        """
        conv1, norm, act1, conv2, act2 = self.output_upscaling
        batch, cells, chans = src.shape
        x = _transposed_conv_2x2(src.reshape(batch * cells, chans), conv1)
        x = activate_fresh(act1, F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
        x = activate_fresh(act2, _transposed_conv_2x2(x, conv2))
        return x.view(batch, cells * 16, -1)


def blocks_to_maps(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, K, h*w*16) values in ``MaskDecoder.upscale``'s block order -> (B, K, 4h, 4w) maps:
    entry (i, j, a1, b1, a2, b2) is pixel (4i + 2a1 + a2, 4j + 2b1 + b2)."""
    batch, count = values.shape[:2]
    blocks = values.view(batch, count, height, width, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
    return blocks.reshape(batch, count, 4 * height, 4 * width)


def _transposed_conv_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2, stride-2 ConvTranspose2d on pixel rows: (N, C_in) -> (4N, C_out), the
    output rows of pixel n being its 2x2 block in row-major order."""
    weight = conv.weight  # (C_in, C_out, 2, 2)
    out_chans = weight.shape[1]
    blocks = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 4 * out_chans)
    return torch.addmm(conv.bias.repeat(4), x, blocks).view(-1, out_chans)
