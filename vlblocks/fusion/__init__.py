"""Fusion of an image stream and a text stream: co-attention (ViLBERT / LXMERT) and concat (late fusion)."""

from __future__ import annotations

from vlblocks.fusion.coattention import CoAttentionFusion, CoAttentionLayer
from vlblocks.fusion.concat import ConcatFusion
from vlblocks.fusion.output import FusionOutput

__all__ = ["CoAttentionFusion", "CoAttentionLayer", "ConcatFusion", "FusionOutput"]
