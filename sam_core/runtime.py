"""Process-level settings that make CPU inference faster.

glibc returns every freed block above its mmap threshold (32 MiB at most, by default) to the
operating system, so each large activation tensor of the image encoder (tens of MiB) is
mapped afresh and page-faulted in on every forward pass. Raising the threshold and keeping
freed memory in the heap removes that cost: the vit_t encoder runs ~25-30% faster on our
2-core machines (0.85 -> 0.63 s), at the price of the process keeping its peak heap size.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_applied: bool | None = None


def tune_memory_allocator() -> bool:
    """Apply the glibc malloc settings once per process; True if they are in effect.

    Does nothing off Linux/glibc, or when the environment sets ``PERSAM_MALLOC_TUNING=0``.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("PERSAM_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = (mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
          and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
          and mallopt(_M_TOP_PAD, 256 << 20) == 1)
    _applied = bool(ok)
    return _applied


# -- MKL's vector math: set up once, on one thread ------------------------------------------
# The PyPI wheels compute float ``torch.sqrt``, ``exp``, ``log``, ``sin``, ``cos``, ``tanh`` and
# ``erf`` with MKL's vector math library (VML), which sets itself up on its first call. When
# that first call is a parallel one (2048 elements or more, two threads at once), one thread
# can use a lower-accuracy path for its share: on a 2-core Xeon with torch 2.13.0, about one
# fresh process in five had the first ``torch.sqrt`` of 4096 floats off by up to 2.6e-4
# (relative) in 2047 of the first 2048 values, and correct values on every later call. In
# SAM that first call is the neck's LayerNorm2d of the first encoder pass (or the sine
# positional encoding), so a process's first embedding could differ from every later one.
# A call on a few elements runs on the calling thread alone and completes the set-up for
# every function and thread; a later parallel first call of ``sin`` was always exact.
_vector_math_ready = False


def prepare_vector_math() -> None:
    """Complete MKL's vector-math set-up on this thread, once per process (see above).
    Called when ``sam_core`` is imported; it cannot repair a process whose first such call
    already ran in parallel."""
    global _vector_math_ready
    if not _vector_math_ready:
        import torch

        torch.sqrt(torch.ones(16))  # below PyTorch's 2048-element grain: one thread
        _vector_math_ready = True


# -- oneDNN for the encoders' linear layers and 1x1 convolutions ----------------------------
# PyTorch sends a float32 ``F.linear`` on the CPU to its BLAS (MKL in the PyPI wheels), and a
# 1x1 convolution of one image to its own im2col + BLAS code when it runs on one thread. For the
# encoders' token-by-channel products (thousands of rows, 64-1280 channels) oneDNN's direct
# convolution, which the same wheels carry, is faster: a linear layer is a 1x1 convolution of
# its rows taken as the pixels of a channels-last image. Per product it ran 10-25% faster than
# oneDNN's matmul, which ran 13-80% faster than BLAS, on our 2-core AMD EPYC machines
# (docs/method.md 2). Below a few hundred rows its set-up costs more than it saves, so small
# products stay on ``F.linear``.
ONEDNN_MIN_ROWS = 256
_onednn_linear: bool | None = None
_onednn_gelu: bool | None = None


def _operator_agrees(shapes, compute_got, compute_want) -> bool:
    """Whether an optional oneDNN operator exists and agrees with the plain PyTorch result:
    seeded random tensors of ``shapes`` go to both functions, without gradients; False on a
    build that lacks the operator."""
    try:
        import torch

        generator = torch.Generator().manual_seed(0)
        tensors = [torch.randn(*shape, generator=generator) for shape in shapes]
        with torch.no_grad():
            return bool(torch.allclose(compute_got(*tensors), compute_want(*tensors), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):  # a build without oneDNN
        return False


def onednn_linear_enabled() -> bool:
    """True when oneDNN's convolution (``torch.ops.aten.mkldnn_convolution``) exists and a 1x1
    convolution through it agrees with ``F.linear`` on a small product (checked once per
    process), unless ``PERSAM_ONEDNN_LINEAR=0``."""
    global _onednn_linear
    if _onednn_linear is None:
        _onednn_linear = False
        if os.environ.get("PERSAM_ONEDNN_LINEAR", "1") != "0":
            import torch
            import torch.nn.functional as F

            def as_convolution(x, weight, bias):
                pixels = x.view(1, 300, 1, 8).permute(0, 3, 1, 2)
                out = torch.ops.aten.mkldnn_convolution(pixels, weight[:, :, None, None], bias,
                                                        [0, 0], [1, 1], [1, 1], 1)
                return out.permute(0, 2, 3, 1).reshape(300, 5)

            _onednn_linear = _operator_agrees([(300, 8), (5, 8), (5,)], as_convolution, F.linear)
    return _onednn_linear


def onednn_gelu_fusion_enabled() -> bool:
    """True when oneDNN can apply the exact GELU inside a convolution
    (``torch.ops.mkldnn._convolution_pointwise`` with its "gelu" post-op) and that agrees with
    a convolution followed by ``F.gelu`` on a small input (checked once per process), on top
    of :func:`onednn_linear_enabled`. On an AVX-512 Xeon the fused GELU saved 4-7 ms of a
    28 ms expanding convolution of the MBConv stage; on AMD EPYC (AVX2) it measured no change."""
    global _onednn_gelu
    if not onednn_linear_enabled():
        return False
    if _onednn_gelu is None:
        import torch
        import torch.nn.functional as F

        def fused(x, weight, bias):
            x = x.contiguous(memory_format=torch.channels_last)
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [1, 1], [1, 1], [1, 1], 1,
                                                           "gelu", [], "none")

        _onednn_gelu = _operator_agrees([(1, 8, 5, 5), (6, 8, 3, 3), (6,)], fused,
                                        lambda x, weight, bias: F.gelu(F.conv2d(x, weight, bias, padding=1)))
    return _onednn_gelu


def set_onednn_linear(enabled: bool) -> bool:
    """Turn the oneDNN route of ``common.Linear`` and ``common.conv2d`` off (``False``) or back
    on where available (``True``) for this process, e.g. to compare the two in one run;
    returns the new state."""
    global _onednn_linear
    _onednn_linear = None if enabled else False
    return onednn_linear_enabled() if enabled else False
