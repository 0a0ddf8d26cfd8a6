"""The output every vlblocks fusion module returns (co-attention, concat).

Shapes: B batch, P pooled width (`fusion.out_dim`), Ni image tokens, Nt text tokens, D token width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["FusionOutput"]


class FusionOutput(NamedTuple):
    """Fused features of an image-text pair.

    Attributes:
        pooled: (B, P) joint vector for a classifier head; P is the fusion's `out_dim`.
        image_tokens: (B, Ni, D) image tokens after fusion (unchanged input tokens for `ConcatFusion`).
        text_tokens: (B, Nt, D) text tokens after fusion (unchanged input tokens for `ConcatFusion`).
    """

    pooled: torch.Tensor
    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
