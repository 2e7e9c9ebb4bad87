"""``sam_core.common.gelu_fresh``: F.gelu's values, in place only where that is safe."""
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
