"""``sam_core.common``: gelu_fresh (F.gelu's values, in place only where that is safe) and Linear
(nn.Linear through oneDNN for large float32 CPU inference products)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam_core.common import activate_fresh, gelu_fresh


def _inputs():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 6, 5, 7, generator=g) * 3
    return {
        "contiguous": base.clone(),
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.clone().transpose(2, 3),
        "tokens": torch.randn(3, 11, 8, generator=g) * 3,
    }


@pytest.mark.parametrize("kind", list(_inputs()))
def test_values_equal_f_gelu_and_layout_is_kept(kind):
    x = _inputs()[kind]
    want = F.gelu(x)
    with torch.no_grad():
        got = gelu_fresh(x.clone(memory_format=torch.preserve_format))
    # In place walks memory in storage order; PyTorch's kernels may round the last bit
    # differently between vectorized and strided walks.
    assert (got - want).abs().max().item() < 1e-6
    assert got.stride() == x.stride() or kind == "transposed"


def test_in_place_without_grad():
    x = _inputs()["channels_last"]
    with torch.no_grad():
        out = gelu_fresh(x)
    assert out.data_ptr() == x.data_ptr()
    assert (x - F.gelu(_inputs()["channels_last"])).abs().max().item() < 1e-6


def test_not_in_place_when_autograd_needs_the_input():
    x = _inputs()["contiguous"].requires_grad_()
    out = gelu_fresh(x * 1.0)
    out.sum().backward()
    reference = x.detach().clone().requires_grad_()
    F.gelu(reference).sum().backward()
    assert torch.allclose(x.grad, reference.grad)


def test_activate_fresh_leaves_other_activations_alone():
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(activate_fresh(torch.nn.ReLU(), x.clone()), torch.relu(x))
        tanh_gelu = torch.nn.GELU(approximate="tanh")
        assert torch.equal(activate_fresh(tanh_gelu, x.clone()), F.gelu(x, approximate="tanh"))


# -- Linear ------------------------------------------------------------------------------------
def _linear_layer(in_features=96, out_features=160, bias=True):
    from sam_core.common import Linear

    torch.manual_seed(0)
    return Linear(in_features, out_features, bias=bias)


def _ops_called(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


@pytest.mark.parametrize("bias", [True, False])
def test_linear_many_rows_take_onednn_convolution_and_agree_with_f_linear(bias):
    from sam_core import onednn_linear_enabled
    from sam_core.runtime import ONEDNN_MIN_ROWS

    assert onednn_linear_enabled(), "the CPU wheel carries oneDNN; the route must be on here"
    layer = _linear_layer(bias=bias)
    x = torch.randn(2, ONEDNN_MIN_ROWS, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = layer(x)
        ops = _ops_called(lambda: layer(x))
    assert "aten::mkldnn_convolution" in ops
    want = F.linear(x, layer.weight, layer.bias)
    assert got.shape == want.shape == (2, ONEDNN_MIN_ROWS, 160)
    # Same products, another summation order: float32 rounding only (values are ~1).
    assert (got - want).abs().max().item() < 1e-5


def test_linear_few_rows_grad_and_off_switch_are_f_linear():
    from sam_core import set_onednn_linear

    layer = _linear_layer()
    few = torch.randn(9, 96)
    with torch.no_grad():
        assert torch.equal(layer(few), F.linear(few, layer.weight, layer.bias))
        assert "aten::mkldnn_convolution" not in _ops_called(lambda: layer(few))
    many = torch.randn(512, 96, requires_grad=True)
    out = layer(many)  # autograd on: the oneDNN op has no backward, so F.linear
    out.sum().backward()
    assert many.grad is not None and layer.weight.grad is not None
    assert torch.equal(out.detach(), F.linear(many, layer.weight, layer.bias).detach())
    try:
        assert set_onednn_linear(False) is False
        with torch.no_grad():
            assert torch.equal(layer(many), F.linear(many, layer.weight, layer.bias))
            assert "aten::mkldnn_convolution" not in _ops_called(lambda: layer(many))
    finally:
        assert set_onednn_linear(True) is True


@pytest.mark.parametrize("in_chans, out_chans, kernel, stride, padding, groups, bias", [
    (16, 48, 1, 1, 0, 1, True),     # a pointwise convolution (the MBConv's expand / project)
    (24, 24, 3, 1, 1, 24, True),    # depthwise 3x3
    (24, 24, 3, 2, 1, 24, False),   # depthwise 3x3, stride 2 (a merge)
    (8, 32, 3, 1, 1, 1, False),     # a dense 3x3 (the neck)
])
def test_conv2d_takes_onednn_and_agrees_with_f_conv2d(in_chans, out_chans, kernel, stride, padding, groups, bias):
    from sam_core import set_onednn_linear
    from sam_core.common import Conv2d

    torch.manual_seed(0)
    layer = Conv2d(in_chans, out_chans, kernel, stride, padding, groups=groups, bias=bias)
    x = torch.randn(1, in_chans, 20, 18).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # where PyTorch itself would not send a 1x1 convolution to oneDNN
        with torch.no_grad():
            got = layer(x)
            assert "aten::mkldnn_convolution" in _ops_called(lambda: layer(x))
            want = F.conv2d(x, layer.weight, layer.bias, stride, padding, 1, groups)
            assert got.shape == want.shape
            assert got.is_contiguous(memory_format=torch.channels_last)
            assert (got - want).abs().max().item() < 1e-5
            set_onednn_linear(False)
            assert torch.equal(layer(x), want)  # the route off: F.conv2d itself
    finally:
        set_onednn_linear(True)
        torch.set_num_threads(threads)


def test_conv2d_with_string_padding_is_f_conv2d():
    from sam_core.common import Conv2d

    layer = Conv2d(4, 6, 3, padding="same")
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        assert torch.equal(layer(x), F.conv2d(x, layer.weight, layer.bias, padding="same"))


def test_linear_keeps_nn_linear_state_dict():
    layer = _linear_layer()
    plain = torch.nn.Linear(96, 160)
    plain.load_state_dict(layer.state_dict(), strict=True)
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_linear_environment_opt_out():
    import os
    import subprocess
    import sys

    code = "from sam_core import onednn_linear_enabled as f; print(f())"
    env = {**os.environ, "PERSAM_ONEDNN_LINEAR": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_encoder_output_with_and_without_onednn():
    """A reduced TinyViT (random weights, 1024 px input) gives the same embedding both ways, to rounding."""
    from sam_core import TinyViTConfig, build_sam, set_onednn_linear

    config = TinyViTConfig(embed_dims=(16, 32, 40, 80), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    torch.manual_seed(0)
    sam = build_sam(model_type="vit_t", config=config)
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        on = sam.image_encoder(image)
        try:
            set_onednn_linear(False)
            off = sam.image_encoder(image)
        finally:
            set_onednn_linear(True)
    assert (on - off).abs().max().item() <= 1e-5 * max(1.0, off.abs().max().item())


@pytest.mark.parametrize("kernel, groups", [(1, 1), (3, 8), (3, 1)])
def test_conv2d_with_gelu_fuses_it_where_onednn_can_and_equals_conv_then_gelu(kernel, groups):
    """``conv2d(..., gelu=True)``: oneDNN's GELU post-op where the process check passed (one
    operator call, no separate GELU), else the convolution then the in-place GELU; the values are
    F.gelu(F.conv2d(...)) either way. The check itself must pass on an x86 build with oneDNN."""
    import platform

    from sam_core import runtime
    from sam_core.common import conv2d

    torch.manual_seed(0)
    x = torch.randn(1, 8, 20, 18).contiguous(memory_format=torch.channels_last) * 2
    weight, bias = torch.randn(8, 8 // groups, kernel, kernel) * 0.3, torch.randn(8)
    want = F.gelu(F.conv2d(x, weight, bias, 1, kernel // 2, 1, groups))
    with torch.no_grad():
        if platform.machine() in ("x86_64", "AMD64") and torch.backends.mkldnn.is_available():
            assert runtime.onednn_gelu_fusion_enabled()
        fused = runtime.onednn_gelu_fusion_enabled()
        ops = _ops_called(lambda: conv2d(x, weight, bias, 1, kernel // 2, 1, groups, gelu=True))
        assert ("mkldnn::_convolution_pointwise" in ops) == fused
        assert ("aten::gelu_" in ops) != fused
        got = conv2d(x, weight, bias, 1, kernel // 2, 1, groups, gelu=True)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert (got - want).abs().max().item() < 1e-5
        saved = runtime._onednn_gelu
        try:
            runtime._onednn_gelu = False  # the fusion unavailable: convolution, then GELU
            off = conv2d(x, weight, bias, 1, kernel // 2, 1, groups, gelu=True)
            assert "mkldnn::_convolution_pointwise" not in _ops_called(
                lambda: conv2d(x, weight, bias, 1, kernel // 2, 1, groups, gelu=True))
        finally:
            runtime._onednn_gelu = saved
        assert (off - want).abs().max().item() < 1e-5
        assert (got - off).abs().max().item() < 1e-6


# A fresh process's first float torch.sqrt / sin / exp on two threads (runtime.prepare_vector_math)
_FIRST_VECTOR_MATH = """
import sam_core, torch
torch.set_num_threads(2)
values = torch.rand(16384, generator=torch.Generator().manual_seed(0)) * 3 + 0.5
first = torch.sqrt(values)  # the process's first parallel vector-math call
exact = values.pow(0.5)     # PyTorch's own vectorized sqrt: correctly rounded, no MKL
print(int((first != exact).sum()), int((torch.sqrt(values) != exact).sum()))
"""


def test_first_vector_math_call_of_a_fresh_process_is_exact():
    """Importing sam_core completes MKL's vector-math set-up on one thread, so the first parallel
    torch.sqrt of a process (SAM's neck LayerNorm2d) is exact. Without that, about one fresh
    process in five or six on a 2-core Xeon had 8190 of its 16384 first values off by up to
    2.6e-4 (relative), and 20 processes all pass with probability below 3%. Every later call
    was exact."""
    import subprocess
    import sys

    for _ in range(20):
        printed = subprocess.run([sys.executable, "-c", _FIRST_VECTOR_MATH], capture_output=True, text=True,
                                 check=True, timeout=120).stdout.split()
        assert printed == ["0", "0"], f"first call: {printed[0]} values differ from sqrt, later call: {printed[1]}"
