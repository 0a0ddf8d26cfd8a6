"""The timing helper every benchmark shares: seconds for one call, with CUDA events on a GPU and the wall clock (or
this process's CPU time, which contention on a shared machine disturbs much less) on CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = ["timed"]


def timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds for one call of `fn` on `device`; `clock` is "wall" or "cpu" (CPU only)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    now = time.process_time if clock == "cpu" else time.perf_counter
    t0 = now()
    fn()
    return now() - t0
