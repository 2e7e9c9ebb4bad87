"""Written-out reference for SAM's mask decoder with PerSAM's two decoder hooks.

This is the independent oracle for our own decoder's hook arguments (docs/method.md 3.4 target-guided
attention, docs/method.md 3.5 target-semantic prompting). It re-computes the official
``MaskDecoder.forward`` step by step from the official modules' *weights*: every attention is
written out as softmax(Q K^T / sqrt(d)) from the official ``q_proj / k_proj / v_proj /
out_proj`` Linear layers, with our own loop over ``transformer.layers``. Only leaf modules
(Linear, LayerNorm, ConvTranspose2d, activations) are called; no official ``forward`` of an
Attention, block, transformer or decoder is used, so a bug in how hooks are threaded through
those forwards cannot hide here.

With ``attn_sim=None`` and ``target_embedding=None`` the result equals the official
``mask_decoder(...)`` output (tests/test_reference_harness.py checks 1e-5).

Hooks, to the letter of docs/method.md 3.4 / 3.5 (which matches the PerSAM authors' code, where an
in-place ``queries += target_embedding`` on the aliased token tensor makes the token PE P + T):

* P = output tokens (iou + mask tokens) ++ sparse prompt tokens; T = target embedding.
* The token positional embedding of every decoder attention is P + T.
* Before each two-way block, T is added to the running queries (block 1 gets P + T).
* Block 1's self-attention skips the PE and has no residual (SAM's ``skip_first_layer_pe``).
* Token-to-image cross-attention of both blocks: softmax(softmax(Q K^T / sqrt(d)) + A),
  A broadcast over heads and tokens. Not the image-to-token attention, not the final one.
* Final token-to-image attention: query = queries + (P + T) + T, keys = keys + image_pe.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["reference_mask_decoder_with_hooks"]


def _attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_sim: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-head attention of an official ``transformer.Attention``, written out.

    Args:
        attn: official Attention (provides ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``,
            ``num_heads``; the projections may downsample the channel count).
        q, k, v: (B, Nq, C), (B, Nk, C), (B, Nk, C).
        attn_sim: optional additive term A, broadcastable to (B, heads, Nq, Nk), applied as
            softmax(softmax(logits) + A) (docs/method.md 3.4).
    """
    heads = attn.num_heads
    qp = attn.q_proj(q)
    kp = attn.k_proj(k)
    vp = attn.v_proj(v)
    b, nq, c = qp.shape
    nk = kp.shape[1]
    d = c // heads
    # (B, N, C) -> (B, heads, N, d): channel block h*d:(h+1)*d belongs to head h, as in SAM.
    qh = qp.reshape(b, nq, heads, d).transpose(1, 2)
    kh = kp.reshape(b, nk, heads, d).transpose(1, 2)
    vh = vp.reshape(b, nk, heads, d).transpose(1, 2)
    weights = torch.softmax(qh @ kh.transpose(-2, -1) / math.sqrt(d), dim=-1)
    if attn_sim is not None:
        weights = torch.softmax(weights + attn_sim, dim=-1)
    out = (weights @ vh).transpose(1, 2).reshape(b, nq, c)
    return attn.out_proj(out)


def _mlp_block(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``common.MLPBlock``: lin2(act(lin1(x))) (act is ReLU in the decoder)."""
    return mlp.lin2(mlp.act(mlp.lin1(x)))


def _layer_norm_2d(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``LayerNorm2d`` over channels of (B, C, H, W): biased variance, eps inside sqrt."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + norm.eps)
    return norm.weight[:, None, None] * x + norm.bias[:, None, None]


def _hyper_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``mask_decoder.MLP``: ReLU after every Linear but the last (no sigmoid in SAM)."""
    layers = list(mlp.layers)
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1:
            x = torch.relu(x)
    if getattr(mlp, "sigmoid_output", False):
        x = torch.sigmoid(x)
    return x


def _check_hooks(attn_sim: Optional[torch.Tensor], target_embedding: Optional[torch.Tensor],
                 n_image_tokens: int, dim: int) -> None:
    """Shape checks with messages, so a wrongly shaped hook fails here, not by broadcasting."""
    if attn_sim is not None:
        if attn_sim.dim() != 4 or attn_sim.shape[-1] != n_image_tokens \
                or any(s != 1 for s in attn_sim.shape[1:3]):
            raise ValueError(f"attn_sim must be (1 or B, 1, 1, {n_image_tokens}), "
                             f"got {tuple(attn_sim.shape)}")
    if target_embedding is not None:
        if target_embedding.dim() != 3 or target_embedding.shape[1:] != (1, dim):
            raise ValueError(f"target_embedding must be (1 or B, 1, {dim}), "
                             f"got {tuple(target_embedding.shape)}")


@torch.no_grad()
def reference_mask_decoder_with_hooks(
    official_sam: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask_output: bool,
    attn_sim: Optional[torch.Tensor] = None,
    target_embedding: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM's mask decoder with PerSAM's optional hooks, recomputed from the official weights.

    Args:
        official_sam: an official ``Sam`` (its ``mask_decoder`` is used) or a ``MaskDecoder``.
        image_embeddings: (1, 256, 64, 64) encoder features.
        image_pe: (1, 256, 64, 64) dense positional encoding (``prompt_encoder.get_dense_pe()``).
        sparse: (B, N, 256) sparse prompt embeddings.
        dense: (B, 256, 64, 64) dense prompt embeddings.
        multimask_output: True -> masks 1..3, False -> mask 0 (as the official decoder).
        attn_sim: None, or A of shape (1, 1, 1, 4096): sigmoid of the standardized similarity
            map resized to 64x64, flattened (docs/method.md 3.4).
        target_embedding: None, or T of shape (1, 1, 256): the raw target embedding (docs/method.md 3.5).

    Returns:
        (low_res_masks (B, 1 or 3, 256, 256), iou_pred (B, 1 or 3)).
    """
    dec = getattr(official_sam, "mask_decoder", official_sam)
    tr = dec.transformer

    # --- Tokens and per-mask image data, as MaskDecoder.predict_masks ---
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)  # P
    src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    _check_hooks(attn_sim, target_embedding, h * w, c)

    keys = src.flatten(2).permute(0, 2, 1)  # (B, HW, C)
    key_pe = pos_src.flatten(2).permute(0, 2, 1)

    # Token PE used by every attention: P + T (docs/method.md 3.5). A new tensor; `tokens` stays P.
    token_pe = tokens if target_embedding is None else tokens + target_embedding
    queries = tokens

    # --- Two-way blocks ---
    for i, layer in enumerate(tr.layers):
        if target_embedding is not None:
            queries = queries + target_embedding  # block 1 thus receives P + T
        # (1) Self-attention of the tokens. Block 1 (skip_first_layer_pe): no PE, and the
        # attention output REPLACES the queries (no residual), exactly as SAM.
        if i == 0:
            queries = _attention(layer.self_attn, queries, queries, queries)
        else:
            q = queries + token_pe
            queries = queries + _attention(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        # (2) Tokens attend to the image; target-guided attention applies here only.
        q = queries + token_pe
        k = keys + key_pe
        queries = queries + _attention(layer.cross_attn_token_to_image, q, k, keys,
                                       attn_sim=attn_sim)
        queries = layer.norm2(queries)
        # (3) MLP on the tokens.
        queries = layer.norm3(queries + _mlp_block(layer.mlp, queries))
        # (4) Image attends to the tokens (roles swapped: image tokens are the queries).
        q = queries + token_pe
        k = keys + key_pe
        keys = layer.norm4(keys + _attention(layer.cross_attn_image_to_token, k, q, queries))

    # --- Final token-to-image attention: query = queries + (P + T) + T ---
    q = queries + token_pe
    if target_embedding is not None:
        q = q + target_embedding
    k = keys + key_pe
    queries = tr.norm_final_attn(queries + _attention(tr.final_attn_token_to_image, q, k, keys))

    # --- Mask decoder tail, as MaskDecoder.predict_masks / forward ---
    iou_token_out = queries[:, 0, :]
    mask_tokens_out = queries[:, 1:(1 + dec.num_mask_tokens), :]

    x = keys.transpose(1, 2).reshape(b, c, h, w)
    up = dec.output_upscaling  # ConvT(2x2, s2), LayerNorm2d, GELU, ConvT(2x2, s2), GELU
    x = up[0](x)
    x = _layer_norm_2d(up[1], x)
    x = up[2](x)
    x = up[3](x)
    upscaled = up[4](x)

    hyper_in = torch.stack(
        [_hyper_mlp(dec.output_hypernetworks_mlps[i], mask_tokens_out[:, i, :])
         for i in range(dec.num_mask_tokens)], dim=1)  # (B, 4, C/8)
    ub, uc, uh, uw = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(ub, uc, uh * uw)).reshape(ub, -1, uh, uw)
    iou_pred = _hyper_mlp(dec.iou_prediction_head, iou_token_out)

    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, sl, :, :], iou_pred[:, sl]
