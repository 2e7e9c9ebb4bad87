"""The mask decoder's reordered arithmetic against the plain formulas it replaces.

* ``Attention.tokens_to_image`` / ``image_to_tokens`` equal ``Attention.forward`` (plain
  per-head projections of all image cells) for one shared image and for one image per prompt
  set, with and without ``attn_sim``;
* ``MaskDecoder.upscale`` plus ``blocks_to_maps`` equal the
  ``output_upscaling`` modules run as convolutions on a (B, C, h, w) map.

Random weights of order one and 4096 image cells, as in SAM; tolerances are max abs.
"""
from __future__ import annotations

import pytest
import torch

from sam_core.mask_decoder import MaskDecoder, blocks_to_maps
from sam_core.transformer import Attention, TwoWayTransformer

TOL = 1e-5


@pytest.fixture(scope="module")
def attention():
    torch.manual_seed(0)
    module = Attention(256, 8, downsample_rate=2).eval()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.1)
    return module


@pytest.mark.parametrize("image_batch, sets", [(1, 1), (1, 3), (3, 3)])
@pytest.mark.parametrize("with_sim", [False, True])
def test_tokens_to_image_equals_plain_attention(attention, image_batch, sets, with_sim):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(sets, 7, 256, generator=g)
    image_k = torch.randn(image_batch, 4096, 256, generator=g)
    image_v = torch.randn(image_batch, 4096, 256, generator=g)
    attn_sim = torch.rand(1, 1, 1, 4096, generator=g) if with_sim else None
    with torch.no_grad():
        fast = attention.tokens_to_image(tokens, image_k, image_v, attn_sim)
        plain = attention(tokens, image_k.expand(sets, -1, -1), image_v.expand(sets, -1, -1), attn_sim)
    assert fast.shape == plain.shape == (sets, 7, 256)
    assert (fast - plain).abs().max().item() < TOL
    assert plain.abs().max().item() > 0.1  # not a trivially small output


@pytest.mark.parametrize("image_batch, sets", [(1, 1), (1, 3), (3, 3)])
def test_image_to_tokens_equals_plain_attention(attention, image_batch, sets):
    g = torch.Generator().manual_seed(2)
    image_q = torch.randn(image_batch, 4096, 256, generator=g)
    tokens_k = torch.randn(sets, 9, 256, generator=g)
    tokens_v = torch.randn(sets, 9, 256, generator=g)
    with torch.no_grad():
        fast = attention.image_to_tokens(image_q, tokens_k, tokens_v)
        plain = attention(image_q.expand(sets, -1, -1), tokens_k, tokens_v)
    assert fast.shape == plain.shape == (sets, 4096, 256)
    assert (fast - plain).abs().max().item() < TOL
    assert plain.abs().max().item() > 0.1


def test_upscale_equals_transposed_convolutions():
    torch.manual_seed(3)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048)
    decoder = MaskDecoder(transformer_dim=256, transformer=transformer).eval()
    with torch.no_grad():
        for param in decoder.output_upscaling.parameters():
            param.normal_(0, 0.2)
    g = torch.Generator().manual_seed(4)
    batch, height, width = 2, 64, 64
    src = torch.randn(batch, height * width, 256, generator=g)
    hyper_in = torch.randn(batch, 3, 32, generator=g)
    with torch.no_grad():
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, 256, height, width))
        plain = (hyper_in @ upscaled.flatten(2)).view(batch, 3, 4 * height, 4 * width)
        fast = blocks_to_maps(torch.bmm(hyper_in, decoder.upscale(src).transpose(1, 2)), height, width)
    assert (fast - plain).abs().max().item() < TOL
    assert plain.abs().max().item() > 0.1


@pytest.mark.parametrize("final_tokens", [[0, 1], [0, 2, 3, 4], [3, 0]])
def test_final_tokens_equal_the_same_rows_of_all_tokens(final_tokens):
    """Only the tokens that are read go through the final attention; each of them gets what it
    gets when all tokens do (the final attention is row by row)."""
    torch.manual_seed(5)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048).eval()
    g = torch.Generator().manual_seed(6)
    image = torch.randn(1, 256, 64, 64, generator=g)
    image_pe = torch.randn(1, 256, 64, 64, generator=g)
    tokens = torch.randn(3, 8, 256, generator=g)
    attn_sim = torch.rand(1, 1, 1, 4096, generator=g)
    target = torch.randn(1, 1, 256, generator=g)
    with torch.no_grad():
        all_tokens, all_keys = transformer(image, image_pe, tokens, attn_sim, target)
        some_tokens, some_keys = transformer(image, image_pe, tokens, attn_sim, target, final_tokens=final_tokens)
    assert some_tokens.shape == (3, len(final_tokens), 256)
    assert (some_tokens - all_tokens[:, final_tokens]).abs().max().item() < 1e-6
    assert torch.equal(some_keys, all_keys)
    assert all_tokens.abs().max().item() > 0.1
