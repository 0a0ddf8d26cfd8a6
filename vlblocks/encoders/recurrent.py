"""GRUTextEncoder: a small native text tower, word embeddings -> bidirectional GRU -> masked mean.

The recurrent sentence encoder of the classic image-text retrieval models (Kiros et al. 2014, "Unifying
Visual-Semantic Embeddings"; Faghri et al. 2018, "VSE++"), with the GRU of Cho et al. (2014): every word's state
reads the words before it (forward direction) and after it (backward direction), so a word such as "triangle" is
encoded together with its own adjectives and position phrase ("a small yellow triangle in the center") without
having to learn attention from scratch. The summary is the masked mean of the per-word states (projected back to
`dim` and layer-normalised), prepended as token 0 like every vlblocks encoder's summary. It is the tiny text tower
of the offline retrieval recipe; any transformers tokenizer (e.g. ``build_word_tokenizer``) gives its ids.

Shapes: B batch, T input tokens (L = longest real row), N = 1 + L output tokens, D width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int
from vlblocks.encoders.output import EncoderOutput
from vlblocks.encoders.text import _check_ids

__all__ = ["GRUTextEncoder"]


class GRUTextEncoder(nn.Module):
    """Embedding -> `depth`-layer bidirectional GRU -> Linear(2D -> D) -> LayerNorm; summary = masked mean.

    Args:
        tokenizer: a transformers tokenizer (vocabulary size and padding id are read from it; kept as an attribute,
            not in the state dict).
        dim: D, the embedding width, the GRU's hidden width per direction and the output width.
        depth: stacked GRU layers.
        dropout: dropout between GRU layers (unused when depth is 1).

    Attributes:
        dim, out_dim: D. num_prefix_tokens: 1 (the summary). tokenizer. vocab_size.
    """

    num_prefix_tokens = 1

    def __init__(self, tokenizer: Any, *, dim: int = 64, depth: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "pad_token_id"):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer must define a pad token (tokenizer.pad_token_id is None)")
        self.dim = check_positive_int("dim", dim)
        self.depth = check_positive_int("depth", depth)
        self.tokenizer = tokenizer
        self.embed = nn.Embedding(len(tokenizer), dim, padding_idx=tokenizer.pad_token_id)
        self.rnn = nn.GRU(
            dim,
            dim,
            num_layers=depth,
            batch_first=True,
            bidirectional=True,
            dropout=check_dropout("dropout", dropout) if depth > 1 else 0.0,
        )
        self.proj = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)

    @property
    def out_dim(self) -> int:
        """Token width D."""
        return self.dim

    @property
    def vocab_size(self) -> int:
        """Valid token ids are in [0, vocab_size)."""
        return self.embed.num_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """input_ids (B, T) int, attention_mask (B, T) 1 / True on real tokens (None: all real).

        Real tokens must come first in a row (right padding, as transformers tokenizers pad by default).

        Returns:
            EncoderOutput(tokens (B, 1 + L, D): the summary then one state per word, mask (B, 1 + L) bool,
            cls (B, D) = the masked mean of the word states).
        """
        _check_ids(input_ids, attention_mask, self.vocab_size)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)  # (B,)
        if int(lengths.min()) == 0:
            raise ValueError(
                "attention_mask must mark at least one real token in every row, got an empty row"
            )
        longest = int(lengths.max())
        ids, mask = input_ids[:, :longest], mask[:, :longest]  # (B, L): drop the all-padding columns
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(
            states, batch_first=True, total_length=longest
        )  # (B, L, 2D)
        words = self.norm(self.proj(states))  # (B, L, 2D) -> (B, L, D)
        weights = mask[..., None].to(words.dtype)  # (B, L, 1)
        summary = (words * weights).sum(dim=1) / weights.sum(dim=1)  # (B, D)
        tokens = torch.cat([summary[:, None], words], dim=1)  # (B, 1 + L, D)
        mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # (B, 1 + L)
        return EncoderOutput(tokens=tokens, mask=mask, cls=summary)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, depth={self.depth}, vocab={self.vocab_size}"
