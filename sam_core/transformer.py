"""SAM's two-way transformer, with PerSAM's two optional decoder hooks.

Hooks (both ``None`` gives SAM exactly):

* ``attn_sim`` (B or 1, 1, 1, N_image): target-guided attention. In the token-to-image
  cross-attention of every two-way block the attention weights become
  ``softmax(softmax(Q K^T / sqrt(d)) + attn_sim)``.
* ``target_embedding`` (B or 1, 1, C): target-semantic prompting. With T the target
  embedding and P the token sequence, every attention uses P + T as the token positional
  embedding, T is added to the running queries before each block, and the final
  token-to-image attention's query is ``queries + (P + T) + T``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width.

    q: (B, Nq, C), k and v: (B, Nk, C) -> (B, Nq, C).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide the internal dimension"
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, tokens, chans = x.shape
        return x.reshape(batch, tokens, self.num_heads, chans // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_sim: Tensor | None = None) -> Tensor:
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        attn = torch.softmax(attn, dim=-1)
        if attn_sim is not None:
            attn = torch.softmax(attn + attn_sim, dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, MLP, image-to-token attention."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor,
                attn_sim: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys, attn_sim=attn_sim))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Tokens and image attend to each other.

    image_embedding (B, C, h, w), image_pe (B, C, h, w), point_embedding (B, N, C)
    -> (tokens (B, N, C), image (B, h*w, C)).
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation,
                                 attention_downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor,
                attn_sim: Tensor | None = None,
                target_embedding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        query_pe = point_embedding
        if target_embedding is not None:
            query_pe = point_embedding + target_embedding
        queries = point_embedding
        for layer in self.layers:
            if target_embedding is not None:
                queries = queries + target_embedding
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe,
                                  attn_sim=attn_sim)
        q = queries + query_pe
        if target_embedding is not None:
            q = q + target_embedding
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=keys + key_pe, v=keys))
        return queries, keys
