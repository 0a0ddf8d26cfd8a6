"""Encoders: uniform wrappers over timm / HF image and text encoders, plus a native tiny CNN and a
native GRU text tower.

Every encoder returns an `EncoderOutput(tokens (B, N, D), mask (B, N) or None, cls (B, D))` whose first token
is a summary token. Shapes: B batch, N tokens, D width.
"""

from __future__ import annotations

from vlblocks.encoders.convnet import ConvNet
from vlblocks.encoders.image import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageConfig,
    ImageEncoder,
)
from vlblocks.encoders.output import EncoderOutput
from vlblocks.encoders.recurrent import GRUTextEncoder
from vlblocks.encoders.text import TextEncoder

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConvNet",
    "EncoderOutput",
    "GRUTextEncoder",
    "ImageConfig",
    "ImageEncoder",
    "TextEncoder",
]
