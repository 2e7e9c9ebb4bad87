"""Wall-clock seconds per named stage, and the arithmetic of a piece of work, for benchmarks and
progress reports."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from sam_core import onednn_gelu_fusion_enabled, onednn_linear_enabled

__all__ = ["StageTimer", "product_flops"]


class StageTimer:
    """Accumulates wall-clock seconds and call counts per named stage::

        timer = StageTimer(device)
        with timer("encode"):
            ...
        timer.seconds["encode"], timer.counts["encode"]

    With a CUDA ``device`` the GPU is synchronized before and after each stage: its work is
    asynchronous, so without that a stage would be charged for whatever ran before it.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = None if device is None else torch.device(device)
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _synchronize(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.counts[stage] = self.counts.get(stage, 0) + 1

    def as_dict(self) -> dict[str, float]:
        return {stage: round(seconds, 4) for stage, seconds in self.seconds.items()}


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _onednn_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(input_shape, weight_shape, out_shape)


def product_flops(function: Callable[[], object]) -> int:
    """Floating-point operations (2 per multiply-add) of the matrix products, convolutions and
    attention products that ``function()`` runs, counted by torch's ``FlopCounterMode`` per
    operator call from the shapes, whatever the timing. Elementwise work (activations, norms,
    softmax, copies) is not counted: this is the arithmetic a processor's matrix-product rate
    bounds. torch's table lacks the CPU attention kernel and the oneDNN convolutions (plain and
    with a fused GELU) that ``sam_core.common.Linear`` and ``sam_core.common.conv2d`` call
    directly; they are added here."""
    from torch.utils.flop_counter import FlopCounterMode  # benchmarks only: not at import

    # keyed by operator packet, as FlopCounterMode looks them up
    extra = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):  # torch >= 2.2
        extra[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    if onednn_linear_enabled():  # (its one-time probe then runs here, not inside the count)
        extra[torch.ops.aten.mkldnn_convolution] = _onednn_conv_flops
    if onednn_gelu_fusion_enabled():  # a convolution with its GELU applied by oneDNN
        extra[torch.ops.mkldnn._convolution_pointwise] = _onednn_conv_flops
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    with counter:
        function()
    return int(counter.get_total_flops())
