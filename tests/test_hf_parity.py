"""transformers' SamModel as an independent implementation (test-only dependency).

A SamModel with a small random SamConfig (ViT of 2 blocks, width 64; prompt encoder and decoder
at SAM's sizes) is saved with ``save_pretrained`` and loaded by persam's ``build_sam``; image
embeddings, low-res mask logits and IoU scores must agree with transformers' own forward on the
same pixels and prompts (sam_core's preprocessing feeds both). Tolerance: 1e-4 absolute on
embeddings, logits and scores (fp32, CPU; observed 1.1e-5 on embeddings of magnitude 5, 4e-6 on
logits of magnitude 3.5, 4e-7 on scores: the two implementations order their sums differently).

Semantic differences, stated and checked here:
* Decoder LayerNorm eps: transformers' two-way blocks use ``mask_decoder_config.layer_norm_eps``
  (1e-6 by default), the official SAM (and persam) 1e-5. The main parity model sets 1e-5; a
  default-config model agrees to 1e-3.
* ``attention_similarity`` (transformers) is added to the attention logits before the softmax:
  softmax(QK^T/sqrt(d) + A). PerSAM (docs/method.md 3.4, sam_core's ``attn_sim``) adds it after:
  softmax(softmax(QK^T/sqrt(d)) + A). Same place (token-to-image attention of both blocks).
* ``target_embedding``: both add T to the token PE (P + T) and to the queries before each
  block; PerSAM's final token-to-image attention adds T once more (query = queries + (P + T) + T,
  docs/method.md 3.5), transformers' does not.
With those two differences written into transformers' model (an attention function registered
through ``transformers.AttentionInterface``, and a pre-hook adding T to the final attention's
query), its outputs agree with sam_core's hooks to the same tolerance; without them they do not.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AttentionInterface, SamConfig, SamModel  # noqa: E402

import sam_core  # noqa: E402
from sam_core.transforms import preprocess_image  # noqa: E402
from sam_fixtures import make_hooks, max_abs, sample_image  # noqa: E402

TOL = 1e-4
VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, global_attn_indexes=[1],
              window_size=14)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights at scales that give non-trivial activations (transformers initializes SAM
    with std 1e-10, which would make every output nearly constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                value = 0.02 * torch.randn(param.shape, generator=g)
            elif leaf in ("rel_pos_h", "rel_pos_w", "pos_embed"):
                value = 0.05 * torch.randn(param.shape, generator=g)
            elif leaf == "positional_embedding" or param.ndim == 1:  # Fourier matrix; norm weights below
                value = torch.randn(param.shape, generator=g)
            else:
                value = torch.randn(param.shape, generator=g) / math.sqrt(param[0].numel())
            param.copy_(value)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):  # transformers' SamLayerNorm included
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
            elif isinstance(module, torch.nn.Embedding):  # tokens and point embeddings: unit scale
                module.weight.copy_(torch.randn(module.weight.shape, generator=g))


def make_hf(folder, decoder_eps: float | None = 1e-5, seed: int = 0) -> SamModel:
    config = SamConfig(vision_config=VISION,
                       mask_decoder_config={} if decoder_eps is None else {"layer_norm_eps": decoder_eps})
    model = SamModel(config).eval()
    randomize(model, seed)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_sam")
    hf = make_hf(folder)
    ours = sam_core.build_sam("auto", folder)
    return hf, sam_core.SamEngine(ours), folder


@pytest.fixture(scope="module")
def image_and_embeddings(pair):
    hf, engine, _ = pair
    image = np.array(sample_image(240, 320))
    embedding = engine.encode(image)
    with torch.no_grad():
        theirs = hf.get_image_embeddings(preprocess_image(image, torch.device("cpu")))
    return image, embedding, theirs


def hf_decode(hf, features, engine, embedding, points=None, labels=None, box=None, mask_input=None,
              multimask=True, **hooks):
    """transformers' prompt encoder + decoder on the prompts sam_core scales into the 1024 frame."""
    coords, point_labels, boxes = engine.prompt_tensors(embedding, points, labels, box)
    kwargs = {}
    if coords is not None:
        kwargs.update(input_points=coords[None], input_labels=point_labels[None])
    if boxes is not None:
        kwargs["input_boxes"] = boxes[None]
    if mask_input is not None:
        kwargs["input_masks"] = torch.as_tensor(mask_input).reshape(1, 1, 256, 256)
    with torch.no_grad():
        out = hf(image_embeddings=features, multimask_output=multimask, **kwargs, **hooks)
    return out.pred_masks[0, 0], out.iou_scores[0, 0]


def test_folder_loads_with_dimensions_from_config_json(pair):
    _, engine, folder = pair
    encoder = engine.sam.image_encoder
    assert engine.model_type == "custom"
    assert encoder.pos_embed.shape[-1] == 64 and len(encoder.blocks) == 2
    assert [b.window_size for b in encoder.blocks] == [14, 0]


def test_image_embeddings_agree(image_and_embeddings):
    _, embedding, theirs = image_and_embeddings
    assert theirs.abs().max() > 0.1  # not a degenerate model
    assert max_abs(embedding.features, theirs) < TOL


PROMPTS = {
    "point": dict(points=[[100, 80]], labels=[1]),
    "two points": dict(points=[[100, 80], [250, 200]], labels=[1, 0]),
    "box": dict(box=[40, 30, 200, 180]),
    "points and box": dict(points=[[100, 80]], labels=[1], box=[40, 30, 200, 180]),
}


@pytest.mark.parametrize("prompt, multimask", [(p, True) for p in PROMPTS] + [("two points", False)])
def test_decoder_masks_and_scores_agree(pair, image_and_embeddings, prompt, multimask):
    hf, engine, _ = pair
    _, embedding, features = image_and_embeddings
    ours = engine.decode(embedding, multimask=multimask, high_res=False, **PROMPTS[prompt])
    masks, scores = hf_decode(hf, features, engine, embedding, multimask=multimask, **PROMPTS[prompt])
    assert masks.abs().max() > 0.1
    assert max_abs(ours.low_res_logits, masks) < TOL
    assert max_abs(ours.scores, scores) < TOL


def test_mask_input_agrees(pair, image_and_embeddings):
    hf, engine, _ = pair
    _, embedding, features = image_and_embeddings
    first = engine.decode(embedding, points=[[100, 80]], labels=[1], multimask=False, high_res=False)
    ours = engine.decode(embedding, points=[[100, 80]], labels=[1], mask_input=first.low_res_logits,
                         high_res=False)
    masks, scores = hf_decode(hf, features, engine, embedding, points=[[100, 80]], labels=[1],
                              mask_input=first.low_res_logits)
    assert max_abs(ours.low_res_logits, masks) < TOL and max_abs(ours.scores, scores) < TOL


def test_default_decoder_eps_is_the_only_gap(tmp_path):
    """transformers' default config (decoder LayerNorm eps 1e-6) still loads and agrees to 1e-3."""
    hf = make_hf(tmp_path, decoder_eps=None, seed=3)
    engine = sam_core.SamEngine(sam_core.build_sam("auto", tmp_path))
    image = np.array(sample_image(96, 128))
    embedding = engine.encode(image)
    ours = engine.decode(embedding, points=[[60, 40]], labels=[1], high_res=False)
    masks, scores = hf_decode(hf, embedding.features, engine, embedding, points=[[60, 40]], labels=[1])
    assert max_abs(ours.low_res_logits, masks) < 1e-3 and max_abs(ours.scores, scores) < 1e-3


# --- PerSAM's hooks against transformers' attention_similarity / target_embedding -------------


def persam_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """docs/method.md 3.4 in transformers' attention interface: the similarity is added after the softmax."""
    weights = torch.softmax(query @ key.transpose(2, 3) * scaling, dim=-1)
    if attention_mask is not None:
        weights = torch.softmax(weights + attention_mask, dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("persam_spec_3_4", persam_attention)


def add_target_to_final_query(target):
    """docs/method.md 3.5's extra T in the final token-to-image attention's query."""
    def hook(module, args, kwargs):
        return args, {**kwargs, "query": kwargs["query"] + target}
    return hook


@pytest.fixture
def hooks():
    return make_hooks(seed=7)


def _decode_both(pair, image_and_embeddings, attn_sim, target, hf_hooks):
    hf, engine, _ = pair
    _, embedding, features = image_and_embeddings
    prompt = dict(points=[[100, 80], [250, 200]], labels=[1, 0])
    ours = engine.decode(embedding, multimask=False, attn_sim=attn_sim, target_embedding=target,
                         high_res=False, **prompt)
    masks, scores = hf_decode(hf, features, engine, embedding, multimask=False, **prompt, **hf_hooks)
    return ours, masks, scores


def test_target_embedding_differs_only_by_the_final_query(pair, image_and_embeddings, hooks):
    hf = pair[0]
    _, target = hooks
    ours, masks, scores = _decode_both(pair, image_and_embeddings, None, target,
                                       {"target_embedding": target})
    assert max_abs(ours.low_res_logits, masks) > 100 * TOL  # transformers' semantics differ ...
    handle = hf.mask_decoder.transformer.final_attn_token_to_image.register_forward_pre_hook(
        add_target_to_final_query(target), with_kwargs=True)
    try:  # ... by exactly that one term
        ours, masks, scores = _decode_both(pair, image_and_embeddings, None, target,
                                           {"target_embedding": target})
    finally:
        handle.remove()
    assert max_abs(ours.low_res_logits, masks) < TOL and max_abs(ours.scores, scores) < TOL


def test_attention_similarity_differs_only_by_the_softmax_order(pair, image_and_embeddings, hooks):
    hf = pair[0]
    attn_sim, _ = hooks
    ours, masks, _ = _decode_both(pair, image_and_embeddings, attn_sim, None,
                                  {"attention_similarity": attn_sim})
    assert max_abs(ours.low_res_logits, masks) > 100 * TOL
    decoder_config = hf.mask_decoder.config
    previous = decoder_config._attn_implementation
    decoder_config._attn_implementation = "persam_spec_3_4"
    try:
        ours, masks, scores = _decode_both(pair, image_and_embeddings, attn_sim, None,
                                           {"attention_similarity": attn_sim})
    finally:
        decoder_config._attn_implementation = previous
    assert max_abs(ours.low_res_logits, masks) < TOL and max_abs(ours.scores, scores) < TOL


def test_both_hooks_together(pair, image_and_embeddings, hooks):
    hf = pair[0]
    attn_sim, target = hooks
    decoder_config = hf.mask_decoder.config
    previous = decoder_config._attn_implementation
    decoder_config._attn_implementation = "persam_spec_3_4"
    handle = hf.mask_decoder.transformer.final_attn_token_to_image.register_forward_pre_hook(
        add_target_to_final_query(target), with_kwargs=True)
    try:
        ours, masks, scores = _decode_both(pair, image_and_embeddings, attn_sim, target,
                                           {"attention_similarity": attn_sim, "target_embedding": target})
    finally:
        handle.remove()
        decoder_config._attn_implementation = previous
    assert max_abs(ours.low_res_logits, masks) < TOL and max_abs(ours.scores, scores) < TOL
