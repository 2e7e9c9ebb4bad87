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

    # The two cross-attentions between a few prompt tokens (Nq ~ 8) and the 4096 image tokens
    # spend nearly all their time projecting the image side (4096 x C x C/2 per projection).
    # Products are associative, so the image-side projection matrices are folded into the
    # small token side instead: (X Wk^T) q^T = X (Wk^T q^T). The image side then costs one
    # (4096 x C) x (C x heads*Nq) product per step, with heads*Nq (64-72) < C/2 (128). Same
    # result as ``forward`` up to float rounding (docs/method.md 2).

    def tokens_to_image(self, tokens: Tensor, image_k: Tensor, image_v: Tensor,
                        attn_sim: Tensor | None = None) -> Tensor:
        """``forward(tokens, image_k, image_v, attn_sim)`` for a few token queries:
        tokens (B, Nq, C), image_k and image_v (1 or B, Nk, C) -> (B, Nq, C)."""
        batch, num_tokens, chans = tokens.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        q = self.q_proj(tokens).view(batch, num_tokens, heads, head_dim)
        # logits_h = q_h (X Wk_h^T + bk_h)^T = (q_h Wk_h) X^T + q_h . bk_h
        q_wk = torch.einsum("bnhd,hdc->bhnc", q, self.k_proj.weight.view(heads, head_dim, chans))
        q_bk = torch.einsum("bnhd,hd->bhn", q, self.k_proj.bias.view(heads, head_dim))
        logits = _tokens_times_image(q_wk.reshape(batch, heads * num_tokens, chans), image_k.transpose(1, 2))
        logits = logits.view(batch, heads, num_tokens, -1).add_(q_bk[..., None]).mul_(1.0 / math.sqrt(head_dim))
        attn = torch.softmax(logits, dim=-1)
        if attn_sim is not None:
            attn = torch.softmax(attn + attn_sim, dim=-1)
        # attn_h (X Wv_h^T + bv_h) = (attn_h X) Wv_h^T + bv_h, since each row of attn sums to 1
        attn_x = _tokens_times_image(attn.reshape(batch, heads * num_tokens, -1), image_v)
        out = torch.einsum("bhnc,hdc->bnhd", attn_x.view(batch, heads, num_tokens, chans),
                           self.v_proj.weight.view(heads, head_dim, chans))
        out = out + self.v_proj.bias.view(heads, head_dim)
        return self.out_proj(out.reshape(batch, num_tokens, heads * head_dim))

    def image_to_tokens(self, image_q: Tensor, tokens_k: Tensor, tokens_v: Tensor) -> Tensor:
        """``forward(image_q, tokens_k, tokens_v)`` with the image as the queries:
        image_q (1 or B, Nk, C), tokens_k and tokens_v (B, Nq, C) -> (B, Nk, C)."""
        batch, num_tokens, chans = tokens_k.shape
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        k = self.k_proj(tokens_k).view(batch, num_tokens, heads, head_dim)
        # logits_h^T = k_h (X Wq_h^T + bq_h)^T = (k_h Wq_h) X^T + k_h . bq_h
        k_wq = torch.einsum("bnhd,hdc->bhnc", k, self.q_proj.weight.view(heads, head_dim, chans))
        bq_k = torch.einsum("hd,bnhd->bhn", self.q_proj.bias.view(heads, head_dim), k)
        # The logits are laid out (heads, tokens, image cells): the softmax over the few tokens
        # then walks 4096 contiguous cells per token. Over a last axis of 8-9 tokens PyTorch's
        # softmax was 20x slower (4.6 vs 0.22 ms per call, a fifth of a decode call).
        logits = _tokens_times_image(k_wq.reshape(batch, heads * num_tokens, chans), image_q.transpose(1, 2))
        logits = logits.view(batch, heads, num_tokens, -1).add_(bq_k[..., None]).mul_(1.0 / math.sqrt(head_dim))
        attn = torch.softmax(logits, dim=2).view(batch, heads * num_tokens, -1)
        # out_proj(concat_h attn_h v_h) = sum_h attn_h (v_h Wo_h^T) + bo
        v = self.v_proj(tokens_v).view(batch, num_tokens, heads, head_dim)
        v_wo = torch.einsum("bnhd,chd->bhnc", v, self.out_proj.weight.view(chans, heads, head_dim))
        out = torch.bmm(attn.transpose(1, 2), v_wo.reshape(batch, heads * num_tokens, chans))
        return out.add_(self.out_proj.bias)


def _tokens_times_image(tokens: Tensor, image: Tensor) -> Tensor:
    """(B, M, K) @ (1 or B, K, N) -> (B, M, N); a shared image is one product for all B."""
    if image.shape[0] == 1 and tokens.shape[0] > 1:
        batch, rows, inner = tokens.shape
        return (tokens.reshape(batch * rows, inner) @ image[0]).view(batch, rows, -1)
    return torch.matmul(tokens, image)


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
        k = keys + key_pe  # both cross-attentions use it: keys do not change in between
        queries = self.norm2(queries + self.cross_attn_token_to_image.tokens_to_image(q, k, keys, attn_sim))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token.image_to_tokens(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Tokens and image attend to each other.

    image_embedding (B, C, h, w), image_pe (B, C, h, w), point_embedding (B, N, C)
    -> (tokens (B, N, C), image (B, h*w, C)); tokens (B, len(final_tokens), C) when
    ``final_tokens`` is given.
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
                attn_sim: Tensor | None = None, target_embedding: Tensor | None = None,
                final_tokens: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """``final_tokens``: indices of the tokens whose output is read; only they go through
        the final token-to-image attention, and the returned tokens are those, in that order
        (all tokens when None). Each token's final attention depends on no other token."""
        # (B, C, h, w) -> contiguous (B, h*w, C): every product below reads rows of C
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        query_pe = point_embedding
        if target_embedding is not None:
            query_pe = point_embedding + target_embedding
        queries = point_embedding
        for layer in self.layers:
            if target_embedding is not None:
                queries = queries + target_embedding
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe,
                                  attn_sim=attn_sim)
        if final_tokens is not None:
            queries, query_pe = queries[:, final_tokens], query_pe[:, final_tokens]
        q = queries + query_pe
        if target_embedding is not None:
            q = q + target_embedding
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image.tokens_to_image(q, keys + key_pe, keys))
        return queries, keys
