"""Sync-free next-token sampling: temperature, top-k, top-p (nucleus), min-p, drawn by the exponential race.

Order, as in HF's warpers: temperature, then top-k, then top-p (Holtzman et al. 2020) on the renormalised top-k
distribution, then min-p (Nguyen et al. 2024: keep tokens with p >= min_p * p_max). A token is then drawn by the
exponential race, `argmax_i p_i / E_i` with E_i ~ Exp(1) from the given `torch.Generator`, which picks i with
probability p_i (the Gumbel-max trick in another form) and never calls `torch.multinomial`.

Every argument is a Python number or a per-row tensor (B,). With an int `top_k` the work is on the k largest logits
only (`torch.topk`, no full sort). Without top-k, top-p finds its threshold by bisection on the logit value (as
FlashInfer's sorting-free samplers do): the nucleus is {i : z_i >= t}, t the largest value whose mass
sum_{z_j >= t} p_j reaches top_p; a final snap to the largest logit below the bracket makes the cut exact. A per-row
tensor `top_k` sorts once to read each row's k-th value. Nothing asks the host, so the sampler compiles whole.

Shapes: B batch (rows), V vocabulary, K top-k width.
"""

from __future__ import annotations

import torch

from vlblocks._checks import check_finite_number, check_nonneg_int, check_probability, is_int, is_number

__all__ = ["filter_probs", "sample_next_token"]

Param = float | int | torch.Tensor

_BISECT_STEPS = 26  # logit bisection steps over a 40-nat window: 6e-7 resolution, then an exact snap
_WINDOW = 40.0  # tokens more than 40 nats below the best carry < V * e^-40 of the mass


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: Param = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: Param = 1.0,
    min_p: Param = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row.

    Args:
        logits: (B, V) next-token logits (any float dtype; the maths is float32).
        temperature: >= 0; 0 means greedy (argmax) for that row.
        top_k: keep the k most likely tokens; 0 disables. An int, or an int tensor (B,).
        top_p: in (0, 1]; keep the smallest set of most likely tokens whose mass reaches top_p; 1 disables.
        min_p: in [0, 1]; keep tokens with probability >= min_p * (largest probability); 0 disables.
        generator: the random stream (same seed, same tokens).
        noise: Exp(1) draws to race with instead of drawing from `generator`: (B, V), or (B, top_k) with an int
            top_k. A compiled step takes its noise this way (torch.compile cannot trace a `torch.Generator`).

    Returns:
        (B,) int64 token ids.

    Raises:
        ValueError: temperature < 0, top_k < 0, top_p outside (0, 1], min_p outside [0, 1], or a tensor
            argument that is not (B,).
    """
    b = _check(logits, temperature, top_k, top_p, min_p)
    greedy = logits.argmax(dim=-1)  # (B,)
    if is_number(temperature) and float(temperature) == 0.0:
        return greedy
    probs, index = filter_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if noise is None:
        noise = torch.empty_like(probs).exponential_(generator=generator)  # E ~ Exp(1)
    elif index is not None and noise.shape[-1] != probs.shape[-1]:
        noise = noise.gather(1, index)  # (B, K): the draws of the kept columns
    race = noise.float().clamp_min(1e-30)
    choice = (probs / race).argmax(dim=-1)  # (B,) position in `probs`
    token = choice if index is None else index.gather(1, choice[:, None])[:, 0]
    if isinstance(temperature, torch.Tensor):
        token = torch.where(temperature.reshape(b) == 0, greedy, token)
    return token


def filter_probs(
    logits: torch.Tensor,
    *,
    temperature: Param = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: Param = 1.0,
    min_p: Param = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Renormalisation-free filtered probabilities: (probs (B, V) or (B, K), token index (B, K) or None).

    Filtered tokens have probability exactly 0; the kept ones are proportional to the tempered softmax. With an
    int `top_k` the columns are the k best tokens (sorted), and `index` maps them back to token ids.
    """
    b = logits.shape[0]
    z = logits.float()
    temp = _column(temperature, b, z)
    z = z / torch.where(temp > 0, temp, torch.ones_like(temp)) if isinstance(temp, torch.Tensor) else z / temp
    index = None
    if is_int(top_k) and 0 < int(top_k) < z.shape[-1]:
        z, index = z.topk(int(top_k), dim=-1)  # (B, K) sorted, descending
        probs = z.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        probs = probs * (before < _column(top_p, b, z))
    else:
        if isinstance(top_k, torch.Tensor):
            z = _top_k_rows(z, top_k.reshape(b))
        probs = z.softmax(dim=-1)
        if not (is_number(top_p) and float(top_p) >= 1.0):
            probs = probs * (z >= _nucleus_threshold(z, probs, _column(top_p, b, z)))
    if not (is_number(min_p) and float(min_p) == 0.0):
        probs = probs * (probs >= _column(min_p, b, z) * probs.amax(dim=-1, keepdim=True))
    return probs, index


def _top_k_rows(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-row top-k (k (B,), 0 = off): mask logits below each row's k-th largest value with -inf."""
    ordered = z.sort(dim=-1, descending=True).values  # (B, V)
    kth = ordered.gather(1, (k.clamp(1, z.shape[-1]) - 1).long()[:, None])  # (B, 1)
    keep = (z >= kth) | (k[:, None] <= 0)
    return z.masked_fill(~keep, float("-inf"))


def _nucleus_threshold(z: torch.Tensor, probs: torch.Tensor, top_p: torch.Tensor | float) -> torch.Tensor:
    """(B, 1) logit threshold t: {z >= t} is HF's top-p set (mass strictly above a kept token < top_p)."""
    zmax = z.amax(dim=-1, keepdim=True)  # (B, 1)
    lo, hi = zmax - _WINDOW, zmax + 1.0  # mass(z >= lo) >= top_p, mass(z >= hi) = 0 < top_p
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) * 0.5
        enough = (probs * (z >= mid)).sum(dim=-1, keepdim=True) >= top_p  # (B, 1)
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    # snap: the largest logit below hi is the exact cut when its mass still reaches top_p
    snap = z.masked_fill(z >= hi, float("-inf")).amax(dim=-1, keepdim=True)
    enough = (probs * (z >= snap)).sum(dim=-1, keepdim=True) >= top_p
    cut = torch.where(enough & (snap >= lo), snap, lo)
    if isinstance(top_p, torch.Tensor):
        cut = torch.where(top_p >= 1.0, torch.full_like(cut, float("-inf")), cut)
    return cut


def _column(value: Param, b: int, like: torch.Tensor) -> torch.Tensor | float:
    """A number as is, a (B,) tensor as a float32 (B, 1) column on `like`'s device."""
    if isinstance(value, torch.Tensor):
        return value.reshape(b, 1).to(device=like.device, dtype=torch.float32)
    return float(value)


def _check(logits: torch.Tensor, temperature: Param, top_k: object, top_p: Param, min_p: Param) -> int:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a float tensor (B, V), got {shape}")
    b = logits.shape[0]
    if b == 0:
        raise ValueError("logits must hold at least one row, got an empty batch")
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p)):
        if isinstance(value, torch.Tensor):
            if value.numel() != b or value.dim() > 1:
                raise ValueError(f"{name} as a tensor must have shape ({b},), got {tuple(value.shape)}")
            continue
        if name == "temperature":
            if check_finite_number(name, value) < 0:
                raise ValueError(f"temperature must be >= 0, got {value!r}")
        elif name == "top_k":
            check_nonneg_int(name, value)
        elif name == "top_p":
            check_probability(name, value, closed_low=False)
        else:
            check_probability(name, value)
    return b
