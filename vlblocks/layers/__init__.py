"""Leaf layers shared by every vlblocks block: the one attention implementation and the MLP."""

from __future__ import annotations

from vlblocks.layers.attention import Attention, KVCache
from vlblocks.layers.mlp import Mlp

__all__ = ["Attention", "KVCache", "Mlp"]
