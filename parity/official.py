"""Test-only access to the official SAM / MobileSAM model code, used as a parity reference.

The PyPI packages ``segment-anything`` (import name ``segment_anything``) and
``mobilesam-mirror`` (import name ``mobile_sam``) ship the official model code but no weights.
Their top-level ``__init__.py`` imports the predictor and the automatic mask generator, which
import torchvision; torchvision is not (and must not be) installed here. We therefore never
execute the packages' own ``__init__.py``: the ``modeling`` files are loaded one by one with
``importlib`` under private module names (``_official_segment_anything.modeling.*``), so their
relative imports resolve against each other and nothing else.

MobileSAM's ``tiny_vit_sam.py`` imports four helpers from timm (not installed either); while that
single file executes, small stand-ins written here are placed in ``sys.modules`` and removed
again afterwards.

Nothing in this module is shipped with the library; only tests import it.

Typical use from a test::

    from parity.official import build_official_sam, save_random_checkpoint, load_official_checkpoint

    sd = save_random_checkpoint("vit_t", tmp_path / "mobile_sam.pt", seed=0)
    ref = load_official_checkpoint(build_official_sam("vit_t"), tmp_path / "mobile_sam.pt")
    ours = sam_core.build_sam("vit_t", checkpoint=tmp_path / "mobile_sam.pt")
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from collections.abc import Iterable
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

__all__ = [
    "OFFICIAL_PACKAGES",
    "VIT_CONFIGS",
    "load_official",
    "build_official_sam",
    "load_official_checkpoint",
    "random_state_dict",
    "save_random_checkpoint",
    "random_official_sam",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Installed import names of the two reference packages.
OFFICIAL_PACKAGES: Tuple[str, ...] = ("segment_anything", "mobile_sam")

# Modeling files in dependency order: each file's relative imports only name files loaded
# before it (mobile_sam's sam.py imports TinyViT from tiny_vit_sam, hence its position).
_MODELING_FILES: Dict[str, Tuple[str, ...]] = {
    "segment_anything": ("common", "image_encoder", "prompt_encoder", "transformer",
                         "mask_decoder", "sam"),
    "mobile_sam": ("common", "image_encoder", "prompt_encoder", "transformer",
                   "mask_decoder", "tiny_vit_sam", "sam"),
}

# Hyper-parameters of the SAM ViT encoders, copied from segment_anything/build_sam.py
# (build_sam_vit_h / _l / _b). window_size is 14 for all three in _build_sam.
VIT_CONFIGS: Dict[str, Dict[str, Any]] = {
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31),
                  window_size=14),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23),
                  window_size=14),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11),
                  window_size=14),
}

_CACHE: Dict[str, types.SimpleNamespace] = {}


# --------------------------------------------------------------------------------------------
# timm stand-ins for tiny_vit_sam.py
# --------------------------------------------------------------------------------------------


class _DropPath(nn.Module):
    """Stochastic depth per sample (the behaviour of timm's ``DropPath``).

    Identity in eval mode or with ``drop_prob`` 0; in training, zeroes whole samples with
    probability ``drop_prob`` and rescales the survivors by ``1 / keep_prob`` so the expected
    value is unchanged. MobileSAM builds vit_t with ``drop_path_rate=0`` so this is never
    instantiated there, but ``tiny_vit_sam.DropPath`` subclasses it at import time.
    """

    def __init__(self, drop_prob: Optional[float] = None, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.drop_prob or 0.0)
        if p == 0.0 or not self.training:
            return x
        keep = 1.0 - p
        # One Bernoulli draw per sample, broadcast over all other dims.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask = mask / keep
        return x * mask


def _to_2tuple(x: Any) -> Tuple[Any, Any]:
    """timm's ``to_2tuple``: iterables (not strings) become tuples, scalars are doubled."""
    if isinstance(x, Iterable) and not isinstance(x, str):
        return tuple(x)  # type: ignore[return-value]
    return (x, x)


def _trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                   a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """timm's ``trunc_normal_`` signature, delegating to ``torch.nn.init.trunc_normal_``."""
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def _register_model(fn: Callable) -> Callable:
    """timm's model registry decorator, reduced to the identity (we never look models up)."""
    return fn


def _timm_standins() -> Dict[str, types.ModuleType]:
    """Build the four synthetic modules ``tiny_vit_sam.py`` imports from."""
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = _to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = _trunc_normal_  # type: ignore[attr-defined]
    registry.register_model = _register_model  # type: ignore[attr-defined]
    timm.models = models  # type: ignore[attr-defined]
    models.layers = layers  # type: ignore[attr-defined]
    models.registry = registry  # type: ignore[attr-defined]
    for m in (timm, models):
        m.__path__ = []  # mark as packages so "from timm.models.x import" resolves via sys.modules
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers,
            "timm.models.registry": registry}


# --------------------------------------------------------------------------------------------
# Loading the official modeling files
# --------------------------------------------------------------------------------------------


def _package_dir(package: str) -> str:
    """Folder of an installed top-level package, found without executing its ``__init__``.

    ``find_spec`` of a *top-level* name only consults the path finders; it is ``find_spec`` of
    a dotted name that imports the parent package first, so we never ask for a submodule.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"official reference package {package!r} is not installed "
            f"(pip install segment-anything mobilesam-mirror)")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, "modeling", "sam.py")):
        raise ModuleNotFoundError(f"{folder} does not look like an official SAM package "
                                  f"(no modeling/sam.py)")
    return folder


def _synthetic_package(name: str, folder: str) -> types.ModuleType:
    """An empty package module: lets relative imports resolve, runs no ``__init__``."""
    mod = types.ModuleType(name)
    # Empty __path__ on purpose: any import we did not load explicitly fails loudly instead
    # of silently pulling a file (e.g. tiny_vit_sam without the timm stand-ins) from disk.
    mod.__path__ = []
    mod.__package__ = name
    mod.__file__ = None
    mod.__official_folder__ = folder  # type: ignore[attr-defined]
    return mod


def load_official(package: str) -> types.SimpleNamespace:
    """Load the official modeling code of ``package`` without running its ``__init__.py``.

    Args:
        package: ``"segment_anything"`` or ``"mobile_sam"``.

    Returns:
        A namespace with the classes ``Sam``, ``ImageEncoderViT``, ``PromptEncoder``,
        ``MaskDecoder``, ``TwoWayTransformer`` (and ``TinyViT`` for mobile_sam), plus
        ``modules`` (file stem -> loaded module), ``package`` and ``folder``. Cached per
        package, so classes are identical across calls (isinstance checks keep working).
    """
    if package not in _MODELING_FILES:
        raise ValueError(f"unknown official package {package!r}; expected one of "
                         f"{', '.join(OFFICIAL_PACKAGES)}")
    if package in _CACHE:
        return _CACHE[package]

    folder = _package_dir(package)
    root_name = f"_official_{package}"
    modeling_name = f"{root_name}.modeling"
    root = _synthetic_package(root_name, folder)
    modeling = _synthetic_package(modeling_name, os.path.join(folder, "modeling"))
    root.modeling = modeling  # type: ignore[attr-defined]
    registered = [root_name, modeling_name]
    sys.modules[root_name] = root
    sys.modules[modeling_name] = modeling

    loaded: Dict[str, types.ModuleType] = {}
    try:
        for stem in _MODELING_FILES[package]:
            full_name = f"{modeling_name}.{stem}"
            path = os.path.join(folder, "modeling", f"{stem}.py")
            spec = importlib.util.spec_from_file_location(full_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            # Registered before executing, as the import system does, so the file's own
            # relative imports of later siblings (none today) and pickling find it.
            sys.modules[full_name] = module
            registered.append(full_name)
            if stem == "tiny_vit_sam":
                _exec_with_timm_standins(spec, module)
            else:
                spec.loader.exec_module(module)
            setattr(modeling, stem, module)
            loaded[stem] = module
    except BaseException:
        # Leave no half-initialized private modules behind; a retry starts clean.
        for name in registered:
            sys.modules.pop(name, None)
        raise

    ns = types.SimpleNamespace(
        package=package,
        folder=folder,
        modules=loaded,
        Sam=loaded["sam"].Sam,
        ImageEncoderViT=loaded["image_encoder"].ImageEncoderViT,
        PromptEncoder=loaded["prompt_encoder"].PromptEncoder,
        MaskDecoder=loaded["mask_decoder"].MaskDecoder,
        TwoWayTransformer=loaded["transformer"].TwoWayTransformer,
        LayerNorm2d=loaded["common"].LayerNorm2d,
    )
    if "tiny_vit_sam" in loaded:
        ns.TinyViT = loaded["tiny_vit_sam"].TinyViT
    _CACHE[package] = ns
    return ns


def _exec_with_timm_standins(spec: importlib.machinery.ModuleSpec,
                             module: types.ModuleType) -> None:
    """Execute ``tiny_vit_sam.py`` with the timm stand-ins visible, then restore sys.modules.

    Whatever was under the four timm names before (a real timm, or nothing) is put back, so
    the stand-ins never leak into other code and a real timm is never shadowed afterwards.
    """
    standins = _timm_standins()
    saved = {name: sys.modules.get(name) for name in standins}
    sys.modules.update(standins)
    try:
        assert spec.loader is not None
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


# --------------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------------


def build_official_sam(model_type: str, **encoder_overrides: Any) -> nn.Module:
    """Build the official ``Sam`` as the packages' ``build_sam.py`` do, without a checkpoint.

    Args:
        model_type: ``"vit_h"``, ``"vit_l"``, ``"vit_b"`` (segment_anything's ``_build_sam``)
            or ``"vit_t"`` (mobile_sam's ``build_sam_vit_t``).
        **encoder_overrides: for the ViT types only, any of ``embed_dim``, ``depth``,
            ``num_heads``, ``global_attn_indexes``, ``window_size`` to build a reduced encoder
            for fast tests, e.g. ``build_official_sam("vit_b", embed_dim=96, depth=4,
            num_heads=2, global_attn_indexes=(1, 3))``.

    Returns:
        The model in eval mode, with the default (meaningless) initial weights. The caller's
        global torch RNG state is left untouched (the constructors draw from it).
    """
    if model_type == "vit_t":
        if encoder_overrides:
            raise ValueError("encoder overrides are only supported for the ViT types "
                             f"(vit_h, vit_l, vit_b), got {sorted(encoder_overrides)} for vit_t")
        ns = load_official("mobile_sam")
        with torch.random.fork_rng(devices=[]):
            image_encoder = ns.TinyViT(
                img_size=1024, in_chans=3, num_classes=1000,
                embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
                use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                layer_lr_decay=0.8,
            )
            sam = _assemble(ns, image_encoder)
    elif model_type in VIT_CONFIGS:
        unknown = set(encoder_overrides) - set(VIT_CONFIGS[model_type])
        if unknown:
            raise TypeError(f"unknown encoder override(s) {sorted(unknown)}; allowed: "
                            f"{sorted(VIT_CONFIGS[model_type])}")
        cfg = {**VIT_CONFIGS[model_type], **encoder_overrides}
        ns = load_official("segment_anything")
        image_size, patch_size = 1024, 16
        with torch.random.fork_rng(devices=[]):
            image_encoder = ns.ImageEncoderViT(
                depth=cfg["depth"],
                embed_dim=cfg["embed_dim"],
                img_size=image_size,
                mlp_ratio=4,
                norm_layer=_layer_norm_eps_1e6,
                num_heads=cfg["num_heads"],
                patch_size=patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=list(cfg["global_attn_indexes"]),
                window_size=cfg["window_size"],
                out_chans=256,
            )
            sam = _assemble(ns, image_encoder)
    else:
        raise ValueError(f"unknown model_type {model_type!r}; expected vit_h, vit_l, vit_b "
                         f"or vit_t")
    sam.eval()
    return sam


def _layer_norm_eps_1e6(dim: int) -> nn.LayerNorm:
    """``partial(torch.nn.LayerNorm, eps=1e-6)`` of ``_build_sam``, as a named function."""
    return nn.LayerNorm(dim, eps=1e-6)


def _assemble(ns: types.SimpleNamespace, image_encoder: nn.Module) -> nn.Module:
    """Prompt encoder, mask decoder and ``Sam`` wrapper: identical in all four builders."""
    prompt_embed_dim, image_size, patch_size = 256, 1024, 16
    grid = image_size // patch_size
    transformer = ns.TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048,
                                       num_heads=8)
    return ns.Sam(
        image_encoder=image_encoder,
        prompt_encoder=ns.PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=ns.MaskDecoder(
            num_multimask_outputs=3,
            transformer=transformer,
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_official_checkpoint(model: nn.Module, path: PathLike) -> nn.Module:
    """Load a checkpoint file into an official model (strict) and return it in eval mode.

    Why ``.eval()`` again after loading: MobileSAM's TinyViT ``Attention.train(False)`` caches
    ``self.ab = attention_biases[:, attention_bias_idxs]`` (a gathered *copy*) and uses that
    cache in eval-mode forwards. The builders call ``.eval()`` before any checkpoint is
    loaded, and ``load_state_dict`` only copies into ``attention_biases`` in place, so the
    cache would keep the construction-time zeros. Calling ``.eval()`` after loading rebuilds
    it. (The official ``build_sam_vit_t(checkpoint=...)`` has exactly this bug; for the real
    ``mobile_sam.pt`` it changes every encoder output.)

    ``weights_only=True``: a checkpoint must never be able to run code, here neither.
    """
    state_dict = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Random weights
# --------------------------------------------------------------------------------------------


def _owners(model: nn.Module) -> Dict[str, Tuple[nn.Module, str]]:
    """Map each state_dict key to (owning module, local attribute name)."""
    owners: Dict[str, Tuple[nn.Module, str]] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in module._parameters.items():
            if p is not None:
                owners[prefix + name] = (module, name)
        for name, b in module._buffers.items():
            if b is not None and name not in module._non_persistent_buffers_set:
                owners[prefix + name] = (module, name)
    return owners


def _fan_in(module: nn.Module, weight: torch.Tensor) -> int:
    """Number of inputs summed into one output element of a Linear / Conv / ConvTranspose."""
    if isinstance(module, nn.Linear):
        return weight.shape[1]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # weight: (in, out/groups, *k). With stride s each output pixel sees k/s taps per dim
        # (SAM uses k=s=2, i.e. exactly one input pixel per output pixel).
        taps = 1
        for k, s in zip(module.kernel_size, module.stride):
            taps *= max(1, k // s)
        return max(1, module.in_channels // module.groups * taps)
    if isinstance(module, nn.modules.conv._ConvNd):
        return max(1, math.prod(weight.shape[1:]))  # (in/groups) * kh * kw
    raise TypeError(f"no fan-in rule for {type(module).__name__}")


def _is_layer_norm(module: nn.Module) -> bool:
    # Both official files define their own LayerNorm2d class (common.py and tiny_vit_sam.py),
    # so match by name rather than by one class object.
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "LayerNorm2d"


def _random_tensor(key: str, module: nn.Module, name: str, ref: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
    """Draw one random tensor for ``key``; scales chosen so activations stay O(1).

    Raises ``ValueError`` for a tensor no rule covers, so a new kind of parameter in the
    official code is noticed instead of silently keeping its init value.
    """
    shape = ref.shape

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if name == "num_batches_tracked":
            return ref.clone()  # integer counter, irrelevant in eval mode
        if name == "running_var":
            # Must be positive: it is square-rooted in the eval-mode normalization.
            return torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
        if name == "running_mean":
            return normal(0.1)
        if name == "weight":
            return normal(0.1, 1.0)
        if name == "bias":
            return normal(0.02)
    elif _is_layer_norm(module):
        if name == "weight":
            return normal(0.1, 1.0)
        if name == "bias":
            return normal(0.02)
    elif isinstance(module, nn.Embedding):
        return normal(1.0)  # SAM's point / mask / iou tokens are O(1) vectors
    elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        if name == "weight":
            # Variance-preserving: output element std ~ input std.
            return normal(1.0 / math.sqrt(_fan_in(module, ref)))
        if name == "bias":
            return normal(0.02)
    elif name == "attention_biases":
        return normal(0.5)  # TinyViT per-offset logit biases, added to O(1) logits
    elif name in ("rel_pos_h", "rel_pos_w"):
        # SAM adds q . rel_pos (q NOT scaled by 1/sqrt(d)) to the logits; 1/sqrt(head_dim)
        # makes that term O(1), so relative positions matter without dominating.
        return normal(1.0 / math.sqrt(shape[-1]))
    elif name == "pos_embed":
        return normal(0.5)  # absolute position embedding added to O(1) patch embeddings
    elif name == "positional_encoding_gaussian_matrix":
        return normal(1.0)  # SAM's PositionEmbeddingRandom uses scale 1 * randn
    raise ValueError(f"random_state_dict has no rule for {key!r} "
                     f"({type(module).__name__}.{name}, shape {tuple(shape)})")


def random_state_dict(model: nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """A full random state_dict for ``model``, deterministic from ``seed``.

    Covers every parameter and persistent buffer (exactly ``model.state_dict()``'s keys, in
    its order, same shapes and dtypes). Scales: Linear/Conv weights ~ N(0, 1/sqrt(fan_in)),
    biases ~ N(0, 0.02), LayerNorm/LayerNorm2d/BatchNorm weights ~ 1 + N(0, 0.1), BatchNorm
    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5), embeddings and the prompt
    encoder's Gaussian frequency matrix ~ N(0, 1), TinyViT attention_biases ~ N(0, 0.5),
    SAM rel_pos ~ N(0, 1/sqrt(head_dim)), pos_embed ~ N(0, 0.5); ``num_batches_tracked``
    is kept as is.

    The model itself is not modified.
    """
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    owners = _owners(model)
    out: Dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        if key not in owners:
            raise KeyError(f"cannot find the module owning state_dict key {key!r}")
        module, name = owners[key]
        value = _random_tensor(key, module, name, ref, g)
        out[key] = value.to(dtype=ref.dtype).contiguous()
    return out


def save_random_checkpoint(model_type: str, path: PathLike, seed: int,
                           **encoder_overrides: Any) -> Dict[str, torch.Tensor]:
    """Build the official model, randomize it and save it in the official checkpoint layout.

    The file is a plain ``torch.save`` of a flat ``{key: tensor}`` dict with exactly the keys
    of the official ``model.state_dict()`` (what ``sam_vit_b_01ec64.pth`` / ``mobile_sam.pt``
    hold), so it loads with ``strict=True`` into the official model and must into ours.

    Returns:
        The saved state_dict.
    """
    model = build_official_sam(model_type, **encoder_overrides)
    state_dict = random_state_dict(model, seed)
    torch.save(state_dict, os.fspath(path))
    return state_dict


def random_official_sam(model_type: str, seed: int, **encoder_overrides: Any) -> nn.Module:
    """Official model with ``random_state_dict(seed)`` loaded (strict) and eval caches fresh.

    Same weights as ``save_random_checkpoint(model_type, path, seed, ...)`` writes, without
    the file round trip.
    """
    model = build_official_sam(model_type, **encoder_overrides)
    model.load_state_dict(random_state_dict(model, seed), strict=True)
    model.eval()  # refresh TinyViT's cached attention biases (see load_official_checkpoint)
    return model
