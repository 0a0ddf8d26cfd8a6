"""Decoders: GPT-2 with cross-attention over image tokens or a visual prefix, loading HF GPT-2 / ViT-GPT-2 weights.

Shapes: B batch, T text tokens, Ni image tokens, D width, V vocabulary.
"""

from __future__ import annotations

from vlblocks.decoders.gpt2 import DecoderOutput, GPT2Block, GPT2Decoder, GPT2DecoderConfig

__all__ = ["DecoderOutput", "GPT2Block", "GPT2Decoder", "GPT2DecoderConfig"]
