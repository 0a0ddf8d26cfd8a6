"""Caption batches for a GPT-2 captioner: teacher-forcing token tensors and generation prompts.

Teacher forcing (Vinyals et al. 2015, "Show and Tell") feeds ``[BOS] w1 .. wn [EOS]`` and scores position t against
the token at t + 1; the batch is right padded and the labels are -100 on padding. A generation prompt (``"a
picture of"``) is ``[BOS] w1 .. wk`` without EOS, left padded so every row's next token comes at the same step.
Works with any transformers tokenizer that has a BOS and an EOS token (the word-level ShapesWorld tokenizer of
``vlblocks.data.tokenizer``, GPT-2's, whose BOS and EOS are the same token); a tokenizer without a pad token pads
with EOS.

Shape legend: B captions, T tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from vlblocks._checks import check_positive_int
from vlblocks.constants import IGNORE_INDEX

__all__ = ["CaptionTokens", "caption_tokens", "prompt_tokens", "tidy_caption"]


class CaptionTokens(NamedTuple):
    """input_ids (B, T) ``[BOS] caption [EOS]`` right padded; attention_mask (B, T) bool; labels (B, T), -100 on
    padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def _ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if isinstance(texts, str) or not texts:
        raise ValueError(f"texts must be a non-empty list of str, got {texts!r}")
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer must have a bos_token and an eos_token")
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def caption_tokens(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> CaptionTokens:
    """Teacher-forcing tensors of `texts`: ``[BOS] words [EOS]``, words cut so a row holds at most `max_length`
    tokens (the EOS is kept), right padded to the longest row."""
    check_positive_int("max_length", max_length)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (BOS and EOS), got {max_length}")
    rows = [
        [tokenizer.bos_token_id, *ids[: max_length - 2], tokenizer.eos_token_id]
        for ids in _ids(tokenizer, texts)
    ]
    t = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), t), _pad_id(tokenizer), dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return CaptionTokens(input_ids, mask, input_ids.masked_fill(~mask, IGNORE_INDEX))


def prompt_tokens(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Generation prompts ``[BOS] words`` (no EOS), left padded: (input_ids (B, P), attention_mask (B, P) bool).
    An empty text gives the BOS token alone."""
    rows = [[tokenizer.bos_token_id, *ids] for ids in _ids(tokenizer, texts)]
    p = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), p), _pad_id(tokenizer), dtype=torch.long)  # (B, P)
    mask = torch.zeros(len(rows), p, dtype=torch.bool)  # (B, P)
    for i, row in enumerate(rows):
        input_ids[i, p - len(row) :] = torch.tensor(row)
        mask[i, p - len(row) :] = True
    return input_ids, mask


def tidy_caption(text: str) -> str:
    """A decoded caption as prose: no space before punctuation (word-level tokenizers decode "a , b : c")."""
    return re.sub(r"\s+([,.:;!?])", r"\1", text).strip()
