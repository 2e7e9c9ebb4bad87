"""SAM's mask decoder: image embedding + prompt embeddings -> mask logits and scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
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
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings, attn_sim, target_embedding)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                      attn_sim: torch.Tensor | None = None,
                      target_embedding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs: (B, 4, 256, 256) logits and (B, 4) scores."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        # One image and several prompt sets: image-side tensors broadcast against the B token
        # sets. When the dense prompt is shared too (batch 1), the image stays batch 1 until the
        # first block's image-to-token attention, so its projections are computed once.
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
        _, chans, height, width = src.shape

        hs, src = self.transformer(src, pos_src, tokens, attn_sim=attn_sim, target_embedding=target_embedding)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1: 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, chans, height, width))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, up_chans, up_h, up_w = upscaled.shape
        masks = (hyper_in @ upscaled.view(batch, up_chans, up_h * up_w)).view(batch, -1, up_h, up_w)
        return masks, self.iou_prediction_head(iou_token_out)
