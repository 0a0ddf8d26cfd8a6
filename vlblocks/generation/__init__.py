"""Generation: static KV cache, sync-free samplers and penalties, the fixed-step decode loop and beam search.

Shapes: B rows, V vocabulary, T new tokens.
"""

from __future__ import annotations

from vlblocks.generation.cache import StaticCache
from vlblocks.generation.processors import apply_repetition_penalty, ban_repeated_ngrams
from vlblocks.generation.sampling import filter_probs, sample_next_token
from vlblocks.generation.search import GenerationOutput, decode_step, generate, prefill

__all__ = [
    "GenerationOutput",
    "StaticCache",
    "apply_repetition_penalty",
    "ban_repeated_ngrams",
    "decode_step",
    "filter_probs",
    "generate",
    "prefill",
    "sample_next_token",
]
