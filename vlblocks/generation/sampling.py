"""Sync-free next-token sampling: temperature, top-k, top-p (nucleus), min-p, drawn by the exponential race.

Order, as in HF's warpers: temperature, then top-k, then top-p (Holtzman et al. 2020) on the renormalised top-k
distribution, then min-p (Nguyen et al. 2024: keep tokens with p >= min_p * p_max). A token is then drawn by the
exponential race, `argmax_i p_i / E_i` with E_i ~ Exp(1) from the given `torch.Generator`, which picks i with
probability p_i (the Gumbel-max trick in another form) and never calls `torch.multinomial`.

Every argument is a Python number or a per-row tensor (B,). With an int `top_k` the work is on the k largest logits
only (`torch.topk`, no full sort). Without top-k, top-p never sorts the vocabulary (as FlashInfer's sorting-free
samplers): two histogram passes over the logits (4096 bins over the 40 nats below the best logit, then 4096
sub-bins of the bin where the mass counted from the top reaches top_p) locate HF's cut to 2.4e-6 nats, the float32
spacing of logits near 10. Over a wide vocabulary the race itself runs in two levels (a group of ~sqrt(V) tokens,
then a token of that group), so it draws ~2 sqrt(V) exponentials instead of V. A per-row tensor `top_k` sorts once
to read each row's k-th value. Nothing asks the host, so the sampler compiles whole.

Shapes: B batch (rows), V vocabulary, K top-k width.
"""

from __future__ import annotations

import math

import torch

from vlblocks._checks import check_finite_number, check_nonneg_int, check_probability, is_int, is_number

__all__ = ["filter_probs", "greedy_token", "noise_width", "race", "sample_next_token"]

Param = float | int | torch.Tensor

_BINS = 4096  # histogram bins per level (two levels: 40 / 4096**2 = 2.4e-6 nats)
_CHUNK = 256  # greedy_token: chunk width
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
    if is_number(temperature) and float(temperature) == 0.0:
        return greedy_token(logits)
    probs, index = filter_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if noise is None:
        noise = torch.empty(b, noise_width(probs.shape[-1]), device=probs.device)
        noise.exponential_(generator=generator)  # E ~ Exp(1)
    if index is not None:
        if noise.shape[-1] != probs.shape[-1]:
            noise = noise.gather(1, index)  # (B, K): the draws of the kept columns
        choice = (probs / noise.float().clamp_min(1e-30)).argmax(dim=-1)  # (B,) column
        token = index.gather(1, choice[:, None])[:, 0]
    else:
        token = race(probs, noise)
    if isinstance(temperature, torch.Tensor):
        greedy = index[:, 0] if index is not None else greedy_token(logits)
        token = torch.where(temperature.reshape(b) == 0, greedy, token)
    return token


def greedy_token(logits: torch.Tensor) -> torch.Tensor:
    """`logits.argmax(dim=-1)` (B, V) -> (B,) (the first maximum), faster over a wide vocabulary.

    torch's CPU argmax does not vectorise along the row; `amax` does. So the row is cut into chunks of 256: the first
    chunk holding the row's maximum wins an argmax over the chunk maxima (the last V mod 256 tokens compete one by
    one, after every chunk), then an argmax inside that chunk.
    """
    b, v = logits.shape
    size = _CHUNK
    chunks = v // size
    if chunks < 16:
        return logits.argmax(dim=-1)
    main = logits[:, : chunks * size].view(b, chunks, size)  # (B, C, S)
    best = torch.cat([main.amax(dim=-1), logits[:, chunks * size :]], dim=1).argmax(dim=-1)  # (B,) chunk or tail
    chunk = best.clamp(max=chunks - 1)
    inner = main.gather(1, chunk[:, None, None].expand(b, 1, size))[:, 0].argmax(dim=-1)  # (B,)
    return torch.where(best < chunks, chunk * size + inner, best + (chunks * size - chunks))


def noise_width(width: int) -> int:
    """Exp(1) draws per row the sampler races with over `width` candidates: all of them up to 1024, else one per
    group plus one per member of a group (`race`), about 2 * sqrt(width)."""
    if width <= 1024:
        return width
    groups, size = _groups(width)
    return groups + size


def race(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw i with probability p_i / sum(p) from unnormalised probs (B, W) by the exponential race.

    Over many candidates the race runs in two levels, so it needs ~2 sqrt(W) draws instead of W: a group of
    candidates wins `argmax mass_g / E_g`, then a member of that group wins `argmax p_i / E_i`; the product of the
    two probabilities is p_i / sum(p). noise: (B, noise_width(W)) Exp(1) draws.
    """
    b, w = probs.shape
    noise = noise.float().clamp_min(1e-30)
    if w <= 1024:
        return (probs / noise).argmax(dim=-1)
    groups, size = _groups(w)
    padded = torch.nn.functional.pad(probs, (0, groups * size - w)).view(b, groups, size)  # (B, G, S)
    group = (padded.sum(dim=-1) / noise[:, :groups]).argmax(dim=-1)  # (B,)
    members = padded.gather(1, group[:, None, None].expand(b, 1, size))[:, 0]  # (B, S)
    member = (members / noise[:, groups:]).argmax(dim=-1)  # (B,)
    return group * size + member


def _groups(width: int) -> tuple[int, int]:
    size = math.isqrt(width - 1) + 1
    return (width + size - 1) // size, size


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
    index = None
    z = logits
    if is_int(top_k) and 0 < int(top_k) < z.shape[-1]:
        z, index = z.topk(int(top_k), dim=-1)  # (B, K) sorted, descending (temperature keeps the order)
    z = z.float()
    temp = _column(temperature, b, z)
    if isinstance(temp, torch.Tensor):
        z = z / torch.where(temp > 0, temp, torch.ones_like(temp))
    elif temp != 1.0:
        z = z / temp
    if index is not None:
        probs = z.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        probs = probs * (before < _column(top_p, b, z))
    else:
        if isinstance(top_k, torch.Tensor):
            z = _top_k_rows(z, top_k.reshape(b))
        probs = z.softmax(dim=-1)
        if not (is_number(top_p) and float(top_p) >= 1.0):
            probs = probs.masked_fill_(_outside_nucleus(z, probs, _column(top_p, b, z)), 0.0)
    if not (is_number(min_p) and float(min_p) == 0.0):
        probs = probs * (probs >= _column(min_p, b, z) * probs.amax(dim=-1, keepdim=True))
    return probs, index


def _top_k_rows(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-row top-k (k (B,), 0 = off): mask logits below each row's k-th largest value with -inf."""
    ordered = z.sort(dim=-1, descending=True).values  # (B, V)
    kth = ordered.gather(1, (k.clamp(1, z.shape[-1]) - 1).long()[:, None])  # (B, 1)
    keep = (z >= kth) | (k[:, None] <= 0)
    return z.masked_fill(~keep, float("-inf"))


def _outside_nucleus(z: torch.Tensor, probs: torch.Tensor, top_p: torch.Tensor | float) -> torch.Tensor:
    """(B, V) bool, True outside HF's top-p set (a token is kept when the mass strictly above it is < top_p). No sort.

    Level 1 histograms the mass over 4096 bins of the 40 nats below the best logit and finds the bin where the mass
    counted from the top reaches top_p. Level 2 histograms the tokens of that bin over 4096 sub-bins (2.4e-6 nats,
    the float32 spacing of logits near 10) and finds the sub-bin where the mass above the bin plus its sub-bins
    reaches top_p; every token up to it is kept, so the kept set is decided by one consistent partition.

    Every per-token test after level 1 reads one float, t = (depth - bin) * 4096, the token's position in sub-bins
    counted from the top of the crossing bin (exact inside it: depth - bin is exact there and 4096 a power of 2):
    a token is in the bin when 0 <= t < 4096, in sub-bin floor(t), and dropped when t >= crossing sub-bin + 1
    (every token of a deeper bin has t >= 4096). Float compares cost half of int64 ones here. The other tokens enter
    level 2 with weight 0 at scattered sub-bins (floor(t) mod 4096, a bitwise and): piling them on one bin would
    serialise the scatter.
    """
    scale = _BINS / _WINDOW
    best = z.amax(dim=-1, keepdim=True) * scale  # (B, 1)
    depth = torch.add(best, z, alpha=-scale).clamp_(0, _BINS - 1)  # (B, V) level-1 position below the best logit
    cum = _cumulative(depth.long(), probs, _BINS)  # (B, BINS) float64: the cut is as exact as the bins
    cross1 = (cum < top_p).sum(dim=-1, keepdim=True).clamp(max=_BINS - 1)  # (B, 1)
    above = torch.where(cross1 > 0, cum.gather(1, (cross1 - 1).clamp(min=0)), 0.0)  # (B, 1) mass above the bin
    t = depth.sub_(cross1).mul_(_BINS)  # (B, V) sub-bins below the top of the crossing bin
    in_bin = probs.masked_fill((t < 0) | (t >= _BINS), 0.0)  # (B, V) the mass of the crossing bin's tokens
    cum = above + _cumulative(t.long().bitwise_and_(_BINS - 1), in_bin, _BINS)  # (B, BINS)
    cross2 = (cum < top_p).sum(dim=-1, keepdim=True).clamp(max=_BINS - 1)  # (B, 1)
    drop = t >= cross2 + 1
    if isinstance(top_p, torch.Tensor):
        drop = drop & (top_p < 1.0)
    return drop


def _cumulative(bins: torch.Tensor, weights: torch.Tensor, nbins: int) -> torch.Tensor:
    """Cumulative mass (B, nbins) float64 of weights (B, V) histogrammed by bins (B, V) (float32 per bin)."""
    mass = weights.new_zeros(bins.shape[0], nbins).scatter_add_(1, bins, weights)  # (B, n)
    return mass.double().cumsum(dim=-1)


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
