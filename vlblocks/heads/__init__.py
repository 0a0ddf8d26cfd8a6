"""Task heads on top of pooled or token features: classification (MLP) and segmentation (linear, conv, mask
transformer)."""

from __future__ import annotations

from vlblocks.heads.classification import MLPHead
from vlblocks.heads.mask_transformer import MaskTransformerSegHead, SharedQKAttention
from vlblocks.heads.segmentation import ConvSegHead, LinearSegHead, join_tokens

__all__ = [
    "ConvSegHead",
    "LinearSegHead",
    "MLPHead",
    "MaskTransformerSegHead",
    "SharedQKAttention",
    "join_tokens",
]
