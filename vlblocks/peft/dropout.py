"""LoRA's input dropout: `nn.Dropout` with a faster keep mask on CPU, exact for every p in [0, 1).

Used by the LoRA layers of `vlblocks.peft.lora` on the input of their low-rank branch (Hu et al. 2021).

Shapes: any; the mask has the input's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks._checks import check_dropout

try:
    from torch.compiler import is_compiling
except ImportError:  # torch < 2.3
    from torch._dynamo import is_compiling

__all__ = ["LoRADropout"]


class LoRADropout(nn.Dropout):
    """Dropout on the LoRA input, with a faster mask on CPU.

    torch's CPU Bernoulli sampler draws one double per element serially (about 12 ns each), which at p > 0 would
    cost more than all LoRA matmuls of a training step once those run on several threads. On CPU in eager mode the
    keep mask here is read from 15-bit uniform integers, two per 32-bit draw of torch's generator (so seeding with
    `torch.manual_seed` still reproduces it), and `p` is rounded to a multiple of 2**-15 (0.1 -> 0.100006); the
    output is rescaled by 1 / (1 - p) as usual. When that rounding would move `p` or `1 - p` by more than 1%
    (p below about 0.003 or above about 0.997, e.g. 1e-5 or 0.99999) the exact `F.dropout` runs instead, so
    no p in [0, 1) silently becomes 0 or 1. On other devices and under `torch.compile` it is `F.dropout`.

    Args:
        p: drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(check_dropout("p", p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or is_compiling():
            return F.dropout(x, self.p, True)
        threshold = _fast_threshold(self.p)
        if threshold is None:
            return F.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # 31 uniform bits each
        keep = torch.cat([(bits & 0x7FFF) >= threshold, (bits >> 16) >= threshold])  # (2 * ceil(n / 2),)
        return (x * keep[:n].view(x.shape)).mul_(32768 / (32768 - threshold))


def _fast_threshold(p: float) -> int | None:
    """The 15-bit drop threshold for p, or None when rounding p to a multiple of 2**-15 would move p or 1 - p
    by more than 1% (the exact path is used then)."""
    threshold = round(p * 32768)
    if not 0 < threshold < 32768:
        return None
    q = threshold / 32768
    if abs(q - p) > 0.01 * p or abs(q - p) > 0.01 * (1 - p):
        return None
    return threshold
