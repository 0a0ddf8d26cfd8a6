"""Next-token cross-entropy of a decoder, skipping ignored labels (-100), padding and prefix positions.

Language-model teacher forcing: the logits at position t are scored against the label at t + 1.

Shapes: B batch, T text tokens, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlblocks._checks import check_tensor

__all__ = ["IGNORE_INDEX", "next_token_loss"]

from vlblocks.constants import IGNORE_INDEX  # label value the loss skips (padding, prefix)


def next_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of logits[:, t] (B, T, V) against labels[:, t + 1] (B, T), skipping -100 and padding."""
    check_tensor("labels", labels, ndim=2, dtype="int", shape="(B, T)")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    if attention_mask is not None:
        labels = labels.masked_fill(~attention_mask.bool(), IGNORE_INDEX)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
