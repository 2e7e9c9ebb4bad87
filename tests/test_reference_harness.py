"""Tests of the test-only parity harness in parity/ (official SAM code + hook oracle).

The harness is what every parity test trusts, so these tests check that it loads the
official code cleanly, builds the published configurations, produces random weights that
give non-degenerate outputs, handles MobileSAM's cached attention biases, and that the
written-out decoder equals the official decoder with hooks off and implements the hooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

from parity import (
    VIT_CONFIGS,
    build_official_sam,
    load_official,
    load_official_checkpoint,
    random_official_sam,
    random_state_dict,
    reference_mask_decoder_with_hooks,
    save_random_checkpoint,
)
from parity.official import _DropPath, _to_2tuple

TESTS_DIR = Path(__file__).resolve().parent

# Reduced vit_b: same code paths as the real one (windowed + global blocks, rel-pos, neck),
# ~1 s per 1024x1024 forward instead of ~30 s.
SMALL_VIT_B = dict(embed_dim=96, depth=4, num_heads=2, global_attn_indexes=(1, 3))

PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
PIXEL_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------
# Fixtures (module scope: model builds and encoder passes are the expensive part)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A normalized 1x3x1024x1024 input: smooth blobs plus noise, like SAM's preprocess output."""
    g = torch.Generator().manual_seed(123)
    coarse = torch.rand(1, 3, 16, 16, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(1024, 1024), mode="bilinear",
                                             align_corners=False)
    pixels = (smooth + torch.randn(1, 3, 1024, 1024, generator=g) * 20).clamp(0, 255)
    return (pixels - PIXEL_MEAN) / PIXEL_STD


@pytest.fixture(scope="module")
def models() -> Dict[str, torch.nn.Module]:
    return {
        "vit_t": random_official_sam("vit_t", seed=0),
        "vit_b_small": random_official_sam("vit_b", seed=1, **SMALL_VIT_B),
    }


@pytest.fixture(scope="module")
def features(models, image) -> Dict[str, torch.Tensor]:
    # One full-size forward per encoder for the whole module (vit_t ~2-3 s, small vit_b ~1 s).
    with torch.no_grad():
        return {name: m.image_encoder(image) for name, m in models.items()}


def _prompts(model: torch.nn.Module, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse and dense prompt embeddings from the official prompt encoder."""
    pe = model.prompt_encoder
    with torch.no_grad():
        if kind == "two_points":  # PerSAM's positive + negative point
            pts = torch.tensor([[[300.0, 420.0], [810.0, 130.0]]])
            return pe(points=(pts, torch.tensor([[1, 0]])), boxes=None, masks=None)
        if kind == "points_box_mask":  # cascaded refinement step 3 shape of inputs
            pts = torch.tensor([[[300.0, 420.0]]])
            box = torch.tensor([[200.0, 300.0, 600.0, 700.0]])
            g = torch.Generator().manual_seed(7)
            mask_in = torch.randn(1, 1, 256, 256, generator=g) * 4
            return pe(points=(pts, torch.tensor([[1]])), boxes=box, masks=mask_in)
        if kind == "batch2":  # two prompts against one image (repeat_interleave path)
            pts = torch.tensor([[[300.0, 420.0]], [[50.0, 990.0]]])
            return pe(points=(pts, torch.tensor([[1], [1]])), boxes=None, masks=None)
    raise AssertionError(kind)


def _hooks(seed: int, dim: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """A plausible attn_sim (sigmoid of a standardized smooth map) and target embedding."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 8, 8, generator=g)
    z = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear",
                                        align_corners=False)
    z = (z - z.mean()) / z.std()
    attn_sim = torch.sigmoid(z).flatten(2).unsqueeze(1)  # (1, 1, 1, 4096)
    target = torch.randn(1, 1, dim, generator=g)
    return attn_sim, target


# ------------------------------------------------------------------------------------------
# Loading the official code
# ------------------------------------------------------------------------------------------


def test_load_official_runs_no_package_init_and_leaks_no_timm():
    """In a fresh interpreter: loading both packages looks up nothing but their two top-level
    folders (no package __init__, no torchvision, no timm), and a pre-existing "timm" entry
    in sys.modules is restored after the stand-ins were used."""
    script = textwrap.dedent(
        """
        import sys, types
        WATCHED = ("torchvision", "timm", "segment_anything", "mobile_sam")
        seen = []

        class Recorder:  # records every import attempt the path finders would handle
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in WATCHED:
                    seen.append(name)
                return None

        from parity.official import load_official
        sys.meta_path.insert(0, Recorder())
        sentinel = types.ModuleType("timm")
        sys.modules["timm"] = sentinel  # pretend a real timm was imported before
        sa = load_official("segment_anything")
        ms = load_official("mobile_sam")
        # Only locating the two top-level folders is allowed: running a package __init__
        # would look up "segment_anything.build_sam" etc., and torchvision / timm never.
        assert sorted(seen) == ["mobile_sam", "segment_anything"], seen
        assert sys.modules["timm"] is sentinel, "pre-existing timm not restored"
        for n in ("timm.models", "timm.models.layers", "timm.models.registry"):
            assert n not in sys.modules, n + " leaked"
        for n in ("segment_anything", "mobile_sam", "torchvision"):
            assert n not in sys.modules, n + " was imported"
        assert ms.TinyViT.__module__ == "_official_mobile_sam.modeling.tiny_vit_sam"
        assert sa.Sam.__module__ == "_official_segment_anything.modeling.sam"
        assert not hasattr(sa, "TinyViT")
        print("OK")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR.parent)] + sys.path))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr[-3000:]


def test_load_official_is_cached_and_rejects_unknown_packages():
    assert load_official("mobile_sam") is load_official("mobile_sam")
    ns = load_official("segment_anything")
    assert ns.Sam is load_official("segment_anything").Sam
    with pytest.raises(ValueError, match="unknown official package"):
        load_official("sam2")


def test_timm_drop_path_standin():
    x = torch.ones(2000, 3)
    dp = _DropPath(0.5)
    dp.eval()
    assert torch.equal(dp(x), x)  # identity in eval
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    rows = y[:, 0]
    assert set(rows.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, rest x/keep
    assert torch.equal(y, rows[:, None].expand_as(y))
    assert 0.4 < (rows > 0).float().mean().item() < 0.6
    assert _to_2tuple(1024) == (1024, 1024) and _to_2tuple((3, 4)) == (3, 4)


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------


def test_build_reduced_vit_b_follows_overrides(models):
    ns = load_official("segment_anything")
    enc = models["vit_b_small"].image_encoder
    assert isinstance(models["vit_b_small"], ns.Sam) and isinstance(enc, ns.ImageEncoderViT)
    assert len(enc.blocks) == 4 and enc.pos_embed.shape == (1, 64, 64, 96)
    assert [b.window_size for b in enc.blocks] == [14, 0, 14, 0]
    # rel-pos tables: windowed blocks 2*14-1 rows, global blocks 2*64-1 rows, head_dim 48.
    assert enc.blocks[0].attn.rel_pos_h.shape == (27, 48)
    assert enc.blocks[1].attn.rel_pos_h.shape == (127, 48)
    assert enc.blocks[0].norm1.eps == 1e-6
    assert not models["vit_b_small"].training


def test_build_published_configs_without_allocating_big_models():
    # The published hyper-parameters of build_sam.py (a full vit_h build is 2.5 GB).
    assert VIT_CONFIGS["vit_h"]["global_attn_indexes"] == (7, 15, 23, 31)
    assert VIT_CONFIGS["vit_l"]["embed_dim"] == 1024
    assert VIT_CONFIGS["vit_b"] == dict(embed_dim=768, depth=12, num_heads=12,
                                        global_attn_indexes=(2, 5, 8, 11), window_size=14)
    with pytest.raises(TypeError, match="unknown encoder override"):
        build_official_sam("vit_b", mlp_ratio=2)
    with pytest.raises(ValueError, match="only supported for the ViT"):
        build_official_sam("vit_t", depth=2)
    with pytest.raises(ValueError, match="unknown model_type"):
        build_official_sam("vit_x")


def test_vit_t_layout_matches_mobile_sam(models):
    ns = load_official("mobile_sam")
    m = models["vit_t"]
    assert isinstance(m.image_encoder, ns.TinyViT)
    keys = m.state_dict().keys()
    # mobile_sam.pt carries the unused TinyViT classifier head; strict loading needs it.
    assert "image_encoder.head.weight" in keys and "image_encoder.norm_head.bias" in keys
    assert "image_encoder.layers.2.blocks.5.attn.attention_biases" in keys
    # Non-persistent buffers are not part of the checkpoint layout.
    assert not any(k.endswith(("attention_bias_idxs", ".ab", "pixel_mean")) for k in keys)
    n_params = sum(p.numel() for p in m.parameters())
    assert 10_000_000 < n_params < 10_200_000  # MobileSAM: ~10.13 M parameters


# ------------------------------------------------------------------------------------------
# Random weights and checkpoints
# ------------------------------------------------------------------------------------------


def test_random_state_dict_is_complete_and_deterministic(models):
    m = models["vit_t"]
    a = random_state_dict(m, seed=5)
    b = random_state_dict(m, seed=5)
    c = random_state_dict(m, seed=6)
    ref = m.state_dict()
    assert list(a) == list(ref)
    for k, v in ref.items():
        assert a[k].shape == v.shape and a[k].dtype == v.dtype, k
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["mask_decoder.iou_token.weight"], c["mask_decoder.iou_token.weight"])
    nbt = [k for k in a if k.endswith("num_batches_tracked")]
    assert nbt and all(a[k].dtype == torch.long for k in nbt)
    rv = [k for k in a if k.endswith("running_var")]
    assert rv and all(bool((a[k] > 0).all()) for k in rv)
    g = a["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert 0.5 < g.std().item() < 1.5
    # Every floating tensor was actually randomized (nothing left at its init constant).
    for k, v in a.items():
        if v.is_floating_point() and v.numel() > 1:
            assert v.std().item() > 1e-3, k


def test_checkpoint_round_trip_and_tinyvit_bias_cache(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    saved = save_random_checkpoint("vit_t", path, seed=3)
    on_disk = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(on_disk, dict) and list(on_disk) == list(saved)
    assert all(torch.equal(on_disk[k], saved[k]) for k in saved)

    model = build_official_sam("vit_t")
    attn = model.image_encoder.layers[1].blocks[0].attn
    # The quirk: load_state_dict after .eval() leaves the cached gathered biases stale.
    model.load_state_dict(on_disk, strict=True)
    fresh = attn.attention_biases[:, attn.attention_bias_idxs]
    assert not torch.equal(attn.ab, fresh), "expected a stale cache (quirk disappeared?)"
    # load_official_checkpoint re-runs .eval(), which rebuilds the cache.
    load_official_checkpoint(model, path)
    for mod in model.modules():
        if hasattr(mod, "attention_bias_idxs"):
            assert torch.equal(mod.ab, mod.attention_biases[:, mod.attention_bias_idxs])
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_small_vit_b_checkpoint_loads_strict(tmp_path):
    path = tmp_path / "sam_vit_b_small.pth"
    saved = save_random_checkpoint("vit_b", path, seed=4, **SMALL_VIT_B)
    model = load_official_checkpoint(build_official_sam("vit_b", **SMALL_VIT_B), path)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError):  # strict: a different config must not load
        load_official_checkpoint(build_official_sam("vit_b", **{**SMALL_VIT_B, "depth": 2}),
                                 path)


# ------------------------------------------------------------------------------------------
# Random weights give sensible reference outputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit_t", "vit_b_small"])
def test_encoder_output_is_non_degenerate(features, name):
    f = features[name]
    assert f.shape == (1, 256, 64, 64)
    assert torch.isfinite(f).all()
    assert 0.1 < f.std().item() < 10
    # Spatial variation, not one vector broadcast over the grid.
    assert f.std(dim=(2, 3)).mean().item() > 0.1


@pytest.mark.parametrize("name", ["vit_t", "vit_b_small"])
def test_decoder_logits_vary(models, features, name):
    m = models[name]
    sparse, dense = _prompts(m, "two_points")
    with torch.no_grad():
        low, iou = m.mask_decoder(features[name], m.prompt_encoder.get_dense_pe(), sparse,
                                  dense, multimask_output=True)
    assert low.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
    assert torch.isfinite(low).all() and torch.isfinite(iou).all()
    for i in range(3):
        assert low[0, i].std().item() > 0.1, i
    # Masks neither empty nor full, and the three outputs differ.
    frac = (low > 0).float().mean().item()
    assert 0.01 < frac < 0.99
    assert (low[0, 0] - low[0, 1]).abs().max().item() > 0.1


# ------------------------------------------------------------------------------------------
# Written-out decoder with hooks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit_t", "vit_b_small"])
@pytest.mark.parametrize("kind", ["two_points", "points_box_mask", "batch2"])
@pytest.mark.parametrize("multimask", [True, False])
def test_reference_decoder_equals_official_with_hooks_off(models, features, name, kind,
                                                          multimask):
    m = models[name]
    sparse, dense = _prompts(m, kind)
    pe = m.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        want_masks, want_iou = m.mask_decoder(features[name], pe, sparse, dense, multimask)
    got_masks, got_iou = reference_mask_decoder_with_hooks(
        m, features[name], pe, sparse, dense, multimask, attn_sim=None, target_embedding=None)
    assert got_masks.shape == want_masks.shape and got_iou.shape == want_iou.shape
    assert (got_masks - want_masks).abs().max().item() < 1e-5
    assert (got_iou - want_iou).abs().max().item() < 1e-5


class _PerSamTargetTransformer(torch.nn.Module):
    """Target-semantic prompting (docs/method.md 3.5) composed from the OFFICIAL block forwards.

    A second formulation of the T-hook: official TwoWayAttentionBlock.forward and
    Attention.forward do the work; only the inputs follow docs/method.md 3.5. Swapped into the
    official MaskDecoder for the duration of one call.
    """

    def __init__(self, official: torch.nn.Module, target: torch.Tensor) -> None:
        super().__init__()
        self.official = official
        self.target = target

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        token_pe = point_embedding + self.target
        queries = point_embedding
        for layer in self.official.layers:
            queries = queries + self.target
            queries, keys = layer(queries=queries, keys=keys, query_pe=token_pe, key_pe=key_pe)
        q = queries + token_pe + self.target
        attn_out = self.official.final_attn_token_to_image(q=q, k=keys + key_pe, v=keys)
        return self.official.norm_final_attn(queries + attn_out), keys


@pytest.mark.parametrize("name", ["vit_t", "vit_b_small"])
def test_target_embedding_hook_matches_official_blocks(models, features, name):
    m = models[name]
    sparse, dense = _prompts(m, "two_points")
    pe = m.prompt_encoder.get_dense_pe()
    _, target = _hooks(seed=11)
    dec = m.mask_decoder
    official_transformer = dec.transformer
    dec.transformer = _PerSamTargetTransformer(official_transformer, target)
    try:
        with torch.no_grad():
            want_masks, want_iou = dec(features[name], pe, sparse, dense, False)
    finally:
        dec.transformer = official_transformer
    got_masks, got_iou = reference_mask_decoder_with_hooks(
        m, features[name], pe, sparse, dense, False, attn_sim=None, target_embedding=target)
    assert (got_masks - want_masks).abs().max().item() < 1e-5
    assert (got_iou - want_iou).abs().max().item() < 1e-5
    # And the hook is not a no-op.
    off_masks, _ = reference_mask_decoder_with_hooks(m, features[name], pe, sparse, dense, False)
    assert (got_masks - off_masks).abs().max().item() > 0.1


class _SimAttention(torch.nn.Module):
    """Wraps one official Attention so that it applies softmax(softmax(.) + A) (docs/method.md 3.4)."""

    def __init__(self, inner: torch.nn.Module, attn_sim: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.attn_sim = attn_sim

    def forward(self, q, k, v):
        from parity.hooks import _attention

        return _attention(self.inner, q, k, v, attn_sim=self.attn_sim)


@pytest.mark.parametrize("with_target", [False, True])
def test_hooks_match_official_decoder_with_swapped_cross_attention(models, features,
                                                                   with_target):
    """Placement check: A only in the token-to-image attention of both blocks (not the final
    one), T as in docs/method.md 3.5; everything else runs through the official forwards."""
    name = "vit_b_small"
    m = models[name]
    sparse, dense = _prompts(m, "two_points")
    pe = m.prompt_encoder.get_dense_pe()
    attn_sim, target = _hooks(seed=13)
    dec = m.mask_decoder
    tr = dec.transformer
    originals = [layer.cross_attn_token_to_image for layer in tr.layers]
    try:
        for layer in tr.layers:
            layer.cross_attn_token_to_image = _SimAttention(layer.cross_attn_token_to_image,
                                                            attn_sim)
        if with_target:
            dec.transformer = _PerSamTargetTransformer(tr, target)
        with torch.no_grad():
            want_masks, want_iou = dec(features[name], pe, sparse, dense, True)
    finally:
        dec.transformer = tr
        for layer, orig in zip(tr.layers, originals):
            layer.cross_attn_token_to_image = orig
    got_masks, got_iou = reference_mask_decoder_with_hooks(
        m, features[name], pe, sparse, dense, True, attn_sim=attn_sim,
        target_embedding=target if with_target else None)
    assert (got_masks - want_masks).abs().max().item() < 1e-5
    assert (got_iou - want_iou).abs().max().item() < 1e-5


def test_attn_sim_hook_behaviour(models, features):
    m = models["vit_t"]
    f = features["vit_t"]
    sparse, dense = _prompts(m, "two_points")
    pe = m.prompt_encoder.get_dense_pe()
    attn_sim, target = _hooks(seed=12)
    off_masks, off_iou = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False)

    # The second softmax is applied even for A = 0 (it flattens the attention), and any
    # constant A gives the same result (softmax is shift-invariant): A enters only via its
    # variation over the image tokens.
    zero = torch.zeros_like(attn_sim)
    z_masks, z_iou = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False,
                                                       attn_sim=zero)
    assert (z_masks - off_masks).abs().max().item() > 1e-2
    c_masks, c_iou = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False,
                                                       attn_sim=zero + 0.7)
    assert (c_masks - z_masks).abs().max().item() < 1e-4
    assert (c_iou - z_iou).abs().max().item() < 1e-4

    # A varying A changes the result, and combines with T into yet another result.
    a_masks, _ = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False,
                                                   attn_sim=attn_sim)
    assert (a_masks - z_masks).abs().max().item() > 1e-2
    t_masks, _ = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False,
                                                   target_embedding=target)
    both, _ = reference_mask_decoder_with_hooks(m, f, pe, sparse, dense, False,
                                                attn_sim=attn_sim, target_embedding=target)
    assert torch.isfinite(both).all()
    assert (both - t_masks).abs().max().item() > 1e-2


def test_written_out_attention_with_attn_sim_matches_formula(models):
    """The re-weighting on one official Attention, checked per head with plain loops."""
    from parity.hooks import _attention

    attn = models["vit_t"].mask_decoder.transformer.layers[0].cross_attn_token_to_image
    g = torch.Generator().manual_seed(9)
    q = torch.randn(1, 7, 256, generator=g)
    k = torch.randn(1, 4096, 256, generator=g)
    v = torch.randn(1, 4096, 256, generator=g)
    a = torch.rand(1, 1, 1, 4096, generator=g)
    with torch.no_grad():
        got = _attention(attn, q, k, v, attn_sim=a)
        qp, kp, vp = attn.q_proj(q)[0], attn.k_proj(k)[0], attn.v_proj(v)[0]
        d = qp.shape[-1] // attn.num_heads
        outs = []
        for h in range(attn.num_heads):
            sl = slice(h * d, (h + 1) * d)
            w = torch.softmax(qp[:, sl] @ kp[:, sl].T / d ** 0.5, dim=-1)
            w = torch.softmax(w + a[0, 0], dim=-1)
            outs.append(w @ vp[:, sl])
        want = attn.out_proj(torch.cat(outs, dim=-1))[None]
    assert (got - want).abs().max().item() < 1e-5


def test_hook_shapes_are_checked(models, features):
    m = models["vit_t"]
    sparse, dense = _prompts(m, "two_points")
    pe = m.prompt_encoder.get_dense_pe()
    with pytest.raises(ValueError, match="attn_sim"):
        reference_mask_decoder_with_hooks(m, features["vit_t"], pe, sparse, dense, False,
                                          attn_sim=torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="target_embedding"):
        reference_mask_decoder_with_hooks(m, features["vit_t"], pe, sparse, dense, False,
                                          target_embedding=torch.zeros(1, 256))
