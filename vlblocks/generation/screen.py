"""Greedy decoding's LM head on CPU: the float32 argmax found through a bfloat16 screen, then checked.

Greedy decoding needs one number per row from the LM head, the index of the largest float32 logit, yet the head's
product (B x D times D x V) is most of a small decoder's step. `GreedyHead` runs that product in bfloat16 (oneDNN,
about twice the float32 speed on a CPU with bfloat16 dot products, and half the bytes), keeps a few candidates,
recomputes their logits in float32 and returns the best of them, but only where a bound proves that no other token
can beat it. For every token v:

    |z_v - a_v| <= ||h - h'|| ||w_v|| + ||h'|| ||w_v - w'_v|| + g_D ||h'|| ||w'_v|| + 2^-7 |a_v|

where z_v = h . w_v is the exact logit, a_v the bfloat16 screen, h' and w'_v the operands rounded to bfloat16
(||h - h'|| <= 2^-8 ||h||), g_D = D 2^-24 / (1 - D 2^-24) the float32 accumulation of D products (a product of two
bfloat16 numbers is exact in float32) and the last term the rounding of the output to bfloat16. Taking the maxima of
the weight norms over the vocabulary, adding the float32 rounding of the logits themselves and some room, the bound
is E = c ||h|| + 2^-6 |T| per row (c computed once per weight). With T the largest screen value of a token that is
not a candidate, a row is certain when its best candidate's float32 logit exceeds T + E. A row that is not certain
(close logits; ~0.3% of the rows of the benchmark's random GPT-2) recomputes in float32 every token whose screen
value is within the bound of that logit (a_u + 2^-6 |a_u| + c ||h|| >= z_best: usually a handful), and a row with
no such token (NaN, inf) takes the whole float32 head: the result is always the argmax of the float32 logits (the
first one on ties), up to the rounding order of the float32 product (which differs between any two kernels, HF's
included).

Candidates without sorting the vocabulary: the screen is cut into chunks of 256 tokens; the 4 chunks with the
largest maxima are kept, and the 8 best tokens inside them are the candidates; T is the larger of the 5th chunk
maximum and the 9th value inside the kept chunks.

This is a CPU path (bfloat16 oneDNN kernels), used from 2 rows on (at one row the float32 matrix-vector product on a
transposed copy streams from memory faster than oneDNN's bfloat16 one; measured): the uncertain rows are gathered
with `nonzero`, whose shape depends on the data, and the rare resolution runs only when there is one (a branch on a
CPU tensor's shape). There is no device to wait for on a CPU; on a GPU `generate` keeps the float32 head, fixed
shapes and no branch.

Shapes: B rows, D width, V vocabulary, Vp = V padded to a multiple of 256, C = Vp / 256 chunks, K candidates.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GreedyHead"]

_CHUNK = 256
_CHUNKS_KEPT = 4
_CANDIDATES = 8
_MIN_VOCAB = 4096  # smaller heads: the float32 head is cheap enough
_MIN_ROWS = 2  # one row: the float32 matrix-vector product on the transposed copy streams faster
_CACHE: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(weight) -> (key, bfloat16 copy and norms)
_BF16: dict[str, bool] = {}


class GreedyHead:
    """`greedy_token(F.linear(h, weight))` for h (B, D) float32 -> (B,) int64, by a bfloat16 screen (see module)."""

    def __init__(self, weight: torch.Tensor, rows: int) -> None:
        self.weight = weight.detach()  # (V, D) float32, the reference
        self.rows = rows
        self.vocab, self.dim = weight.shape
        self.chunks = -(-self.vocab // _CHUNK)  # C
        self.kept = min(_CHUNKS_KEPT, self.chunks)
        self.packed, norms = _bf16_copy(weight, rows, self.chunks * _CHUNK)  # cached per parameter
        n = self.dim * 2.0**-24
        gamma = n / (1 - n)
        w_max, dw_max, wb_max = norms
        # ||h - h'|| <= 2^-8 ||h|| and ||h'|| <= (1 + 2^-8) ||h|| (round to nearest), so the bound per row is
        # ||h|| * (2^-8 w_max + (1 + 2^-8) (dw_max + g wb_max) + 2 g w_max) + 2^-6 |T| (see the module docstring),
        # with room (2^-10) for the rounding of these norms and sums
        u = 2.0**-8
        self.per_norm = (u * w_max + (1 + u) * (dw_max + gamma * wb_max) + 2 * gamma * w_max) * (1 + 2.0**-10)

    @classmethod
    def build(cls, module: nn.Module, rows: int) -> GreedyHead | None:
        """A screened head for `rows` rows, or None where it does not apply (one row, not a bias-free float32 CPU
        `nn.Linear` with a vocabulary of at least 4096, a hook on it, or no bfloat16 oneDNN kernel here)."""
        if type(module) is not nn.Linear or module.bias is not None or module._forward_hooks:
            return None
        if module._forward_pre_hooks:
            return None
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.shape[0] < _MIN_VOCAB:
            return None
        if rows < _MIN_ROWS or weight.shape[0] < 2 * _CANDIDATES or not _bf16_available():
            return None  # one row: the float32 matrix-vector product on the transposed copy streams faster
        return cls(weight, rows)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, D) float32 -> (B,) the index of the largest float32 logit (the first one on ties)."""
        token, certain, screen, z_best = self._screen(h)
        unsure = (~certain).nonzero()[:, 0]  # (n,) rows the screen cannot decide (~0.3% of random GPT-2 rows)
        if unsure.shape[0]:  # a CPU tensor's shape: nothing to wait for (this head only runs on a CPU)
            rows = self._resolve(h.index_select(0, unsure), screen.index_select(0, unsure), z_best[unsure, 0])
            token = token.index_copy_(0, unsure, rows)
        return token

    def screen(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, D) -> (the best candidate (B,), whether it is certainly the float32 argmax (B,) bool)."""
        token, certain, _, _ = self._screen(h)
        return token, certain

    def _resolve(self, h: torch.Tensor, screen: torch.Tensor, z_best: torch.Tensor) -> torch.Tensor:
        """The float32 argmax of the rows h (n, D) the screen (n, Vp) did not decide, z_best (n,) the best
        candidate's logit: only the tokens whose screen value is within the bound of z_best can reach it
        (a_u + 2^-6 |a_u| + c ||h|| >= z_best), so only those are recomputed; a row with none (NaN, inf) takes the
        whole float32 head."""
        n = h.shape[0]
        limit = z_best - h.norm(dim=-1) * self.per_norm - 2.0**-100  # (n,)
        window = screen[:, : self.vocab].abs().mul_(2.0**-6).add_(screen[:, : self.vocab]) >= limit[:, None]
        rows, cols = window.nonzero().unbind(1)  # (m,) each: the tokens that may be the argmax
        exact = (F.embedding(cols, self.weight) * h[rows]).sum(dim=-1)  # (m,) float32 logits
        best = exact.new_full((n,), float("-inf")).scatter_reduce_(0, rows, exact, "amax")  # (n,)
        first = exact == best[rows]
        token = cols.new_full((n,), self.vocab).scatter_reduce_(0, rows[first], cols[first], "amin")  # (n,)
        odd = (token == self.vocab).nonzero()[:, 0]  # rows without a finite window
        full = F.linear(h.index_select(0, odd), self.weight).argmax(dim=-1)  # argmax: the first maximum
        return token.index_copy_(0, odd, full)

    def _screen(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(best candidate (B,), certain (B,), screen (B, Vp) float32, best candidate's logit (B, 1))."""
        b = h.shape[0]
        hb = h.to(torch.bfloat16)
        screen = torch.ops.mkldnn._linear_pointwise(hb, self.packed, None, "none", [], "").float()  # (B, Vp)
        screen[:, self.vocab :] = float("-inf")  # padding rows of the copy
        by_chunk = screen.view(b, self.chunks, _CHUNK)  # (B, C, 256)
        top = by_chunk.amax(dim=-1).topk(min(self.kept + 1, self.chunks), dim=-1)  # (B, G + 1)
        chunk = top.indices[:, : self.kept]  # (B, G)
        inside = by_chunk.gather(1, chunk[:, :, None].expand(b, self.kept, _CHUNK)).view(b, -1)  # (B, G * 256)
        best = inside.topk(_CANDIDATES + 1, dim=-1)  # (B, K + 1)
        col = best.indices[:, :_CANDIDATES]  # (B, K)
        tokens = (col % _CHUNK).add_(chunk.gather(1, col // _CHUNK), alpha=_CHUNK)  # (B, K) token ids
        tokens = tokens.clamp_(max=self.vocab - 1)  # a padding column: only in rows whose screen is not finite
        threshold = best.values[:, _CANDIDATES]  # (B,) every token that is not a candidate is <= threshold
        if self.chunks > self.kept:
            threshold = torch.maximum(threshold, top.values[:, self.kept])
        exact = torch.bmm(F.embedding(tokens, self.weight), h[:, :, None])[..., 0]  # (B, K) float32 logits
        z_best = exact.amax(dim=-1, keepdim=True)  # (B, 1)
        token = torch.where(exact == z_best, tokens, self.vocab).amin(dim=-1)  # (B,) the first maximum
        # certain: z_best > T + E, E = per_norm ||h|| + 2^-6 |T| (the screen's output rounding, relative 2^-8 when
        # rounded to nearest, 2^-7 if truncated, with room)
        bound = threshold.abs().mul_(2.0**-6).add_(h.norm(dim=-1), alpha=self.per_norm)  # (B,)
        bound = bound.add_(2.0**-100)  # flushed denormals (oneDNN's bfloat16 products), at most D 2^-126 each
        return token, z_best[:, 0] > threshold + bound, screen, z_best


def _bf16_copy(weight: torch.Tensor, rows: int, padded: int) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """The bfloat16 copy of weight (V, D), padded with zero rows to `padded` and packed for oneDNN at `rows` rows,
    and the maxima over the vocabulary of ||w_v||, ||w_v - w'_v||, ||w'_v||; cached per weight and version."""
    key = (rows, padded, weight.data_ptr(), weight._version)
    hit = _CACHE.get(id(weight))
    if hit is None or hit[0] != key:
        with torch.no_grad():
            wb = weight.to(torch.bfloat16)  # (V, D)
            wbf = wb.float()
            norms = (
                float(weight.norm(dim=-1).max()),
                float((weight - wbf).norm(dim=-1).max()),
                float(wbf.norm(dim=-1).max()),
            )
            wb = F.pad(wb, (0, 0, 0, padded - weight.shape[0]))  # (Vp, D)
            entry = {"packed": torch.ops.mkldnn._reorder_linear_weight(wb, rows), "norms": norms}
        if hit is None:
            weakref.finalize(weight, _CACHE.pop, id(weight), None)
        hit = _CACHE[id(weight)] = (key, entry)
    return hit[1]["packed"], hit[1]["norms"]


def clear_cache() -> None:
    """Forget the bfloat16 copies (rebuilt on the next use)."""
    _CACHE.clear()


def _bf16_available() -> bool:
    """Whether oneDNN's bfloat16 linear runs here (checked once per process)."""
    if "ok" not in _BF16:
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            if ok:
                w, x = torch.randn(64, 32), torch.randn(3, 32)
                packed = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), 3)
                got = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), packed, None, "none", [], "").float()
                ok = bool(torch.allclose(got, F.linear(x, w), atol=0.1, rtol=0.05))
            _BF16["ok"] = ok
        except (AttributeError, RuntimeError, NotImplementedError):
            _BF16["ok"] = False
    return _BF16["ok"]
