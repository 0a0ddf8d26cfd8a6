"""The output every vlblocks encoder returns, whatever model it wraps (timm, HF, or a native tiny net).

Shapes: B batch, N tokens (prefix tokens first), D width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EncoderOutput"]


@dataclass
class EncoderOutput:
    """Token features of an image or a text.

    Attributes:
        tokens: (B, N, D). `tokens[:, 0]` is always a summary token: the model's [CLS] where it has one,
            otherwise a mean-pooled token the wrapper prepends.
        mask: (B, N) bool, True on real tokens (text padding is False), or None when every token is real.
        cls: (B, D), equal to `tokens[:, 0]`.
    """

    tokens: torch.Tensor
    mask: torch.Tensor | None
    cls: torch.Tensor
