"""Vectorised logits processors: repetition penalty and no-repeat n-gram, equal to HF's processors.

- repetition penalty (Keskar et al. 2019, CTRL): the logit z of every token already in the sequence becomes
  z * penalty where z < 0 and z / penalty otherwise (HF `RepetitionPenaltyLogitsProcessor`);
- no-repeat n-gram (Paulus et al. 2018): a token that would complete an n-gram already present in the sequence gets
  -inf (HF `NoRepeatNGramLogitsProcessor`).

Both read a fixed-size token buffer with a validity mask (left padding and not-yet-written slots are False) and the
current length as a tensor, so they run inside a compiled decode step without asking the host.

Shapes: B rows, V vocabulary, L buffer length, n n-gram size.
"""

from __future__ import annotations

import torch

__all__ = ["apply_repetition_penalty", "ban_repeated_ngrams"]


def apply_repetition_penalty(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    penalty: float | torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Penalise every token present in `tokens` (B, L) (where `mask` (B, L) is True) -> new logits (B, V).

    `penalty` > 0, a number or a per-row tensor (B,); 1 leaves the logits unchanged.
    """
    b, v = logits.shape
    present = torch.ones_like(tokens, dtype=torch.int32) if mask is None else mask.to(torch.int32)
    seen = torch.zeros(b, v, dtype=torch.int32, device=logits.device).scatter_add_(1, tokens, present) > 0
    pen = penalty.reshape(b, 1).to(logits.dtype) if isinstance(penalty, torch.Tensor) else float(penalty)
    penalised = torch.where(logits < 0, logits * pen, logits / pen)
    return torch.where(seen, penalised, logits)


def ban_repeated_ngrams(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    n: int,
    *,
    length: torch.Tensor | int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Set -inf on tokens that would repeat an n-gram of `tokens` (B, L) -> new logits (B, V).

    Args:
        tokens: (B, L) buffer whose first `length` slots hold the sequence so far (default: all L).
        n: n-gram size (>= 1; 0 would disable and is handled by the caller).
        length: current length, an int or a 0-d tensor (decode loops pass a tensor).
        mask: (B, L) False on padding; an n-gram that touches padding is ignored.
    """
    b, total = tokens.shape
    if total < n:
        return logits
    cur = torch.as_tensor(total if length is None else length, device=tokens.device)
    windows = tokens.unfold(1, n, 1)  # (B, W, n), W = L - n + 1
    starts = torch.arange(windows.shape[1], device=tokens.device)  # (W,)
    valid = (starts + n - 1 < cur)[None].expand(b, -1)  # (B, W): the window is complete
    if mask is not None:
        valid = valid & mask.unfold(1, n, 1).all(dim=-1)
    if n > 1:
        where = (cur - (n - 1) + torch.arange(n - 1, device=tokens.device)).clamp(min=0)  # (n-1,)
        prefix = tokens[:, where]  # (B, n-1): the last n-1 tokens
        valid = valid & (windows[..., :-1] == prefix[:, None]).all(dim=-1)
        valid = valid & (cur >= n)
    banned = torch.zeros_like(logits, dtype=torch.int32).scatter_add_(1, windows[..., -1], valid.to(torch.int32))
    return logits.masked_fill(banned > 0, float("-inf"))
