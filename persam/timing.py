"""Wall-clock seconds per named stage, for benchmarks and progress reports."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["StageTimer"]


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
