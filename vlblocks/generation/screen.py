"""Greedy decoding's LM head on CPU: the float32 argmax found through a cheap screen of the logits, then checked.

Greedy decoding needs one number per row from the LM head, the index of the largest float32 logit, yet the head's
product (B x D times D x V) is most of a small decoder's step. `GreedyHead` runs that product in int8 (exact int32
sums on VNNI dot products: `torch._int_mm` from 24 rows, oneDNN's prepacked u8 x s8 linear below, 5-10% faster
there; half the bytes of bfloat16 and 1.5-2x its speed on one core) or, where that is not available, in bfloat16;
keeps a few candidates, recomputes their logits in float32 and returns the best of them, but only where a bound
proves that no other token can beat it. For every token v, with z_v = h . w_v the exact logit,
a_v the screen's value, h' and w'_v the operands as the screen sees them:

    |z_v - a_v| <= ||h - h'|| ||w_v|| + ||h'|| ||w_v - w'_v|| + (the screen's own rounding)

- int8 (`kind="int8"`): w' = s_w q_w with ONE scale per weight (s_w = max |w| / 127, quantised once and cached),
  h' = s_h q_h with one scale per row (s_h = max |h_row| / 127, round to nearest, each step). The int32 product
  P_v = q_h . q_w_v is exact, so a_v = s_h s_w P_v = h' . w'_v with no rounding of its own; ||h - h'|| is computed
  per row each step (in the scaled domain h / s_h - q_h, so nothing underflows). Candidates, chunk maxima and the
  threshold T stay in the integer domain (int32 from `_int_mm`; the prepacked linear returns the same integers as
  float32 with scales 1, exact below 2^24); only T is scaled to logits, per row.
- bfloat16 (`kind="bf16"`): h' and w'_v rounded to bfloat16 (||h - h'|| <= 2^-8 ||h||), the float32 accumulation of
  D exact products (g_D = D 2^-24 / (1 - D 2^-24)) and the output's rounding to bfloat16 (2^-7 |a_v|) add
  g_D ||h'|| ||w'_v|| + 2^-7 |a_v|: E = c ||h|| + 2^-6 |T| per row (c computed once per weight).

Both add the float32 rounding of the logits themselves (2 g_D ||h|| max ||w_v||) and room for the rounding of the
norms. With T the largest screen value of a token that is not a candidate, a row is certain when its best
candidate's float32 logit exceeds T + E (T in logit units). A row that is not certain (close logits; under 1% of the
rows of the benchmark's random GPT-2) recomputes in float32 every token whose screen value is within the bound of
that logit (usually a handful), and a row with no such token (NaN, inf, an all-zero row: its bound is NaN) takes the
whole float32 head: the result is always the argmax of the float32 logits (the first one on ties), up to the rounding
order of the float32 product (which differs between any two kernels, HF's included).

Candidates without sorting the vocabulary: the screen is cut into chunks of 64 tokens; the 16 chunks with the
largest maxima are kept (gathered as whole rows of a view by `index_select`, ~10x faster than `gather`; from the
vocabulary-major (Vp, B) product of `_int_mm` by one advanced index, 2x faster than `take`), and the 16
best tokens inside them are the candidates; T is the larger of the 17th chunk maximum and the 17th value inside the
kept chunks (ties of the integer screen change nothing: T is a value no non-candidate exceeds). With 4 chunks of 256
and 8 candidates T was often too close to the best logit for the int8 bound (17% of random rows undecided, 0.07%
now); the candidates' float32 logits are a multiply and a sum (a batched product of (B, K, D) by (B, D, 1) is 6x
slower on CPU).

The int8 bound is looser than bfloat16's (one scale per weight and per row, Cauchy-Schwarz on the rounding errors:
~3x at width 128) and grows with the width and with outliers in h or in the weight: on random GPT-2 rows 0.2% are
undecided at width 128, 21% at width 768 (0.0% / 0.2% with bfloat16). Each `GreedyHead` counts: once it has seen
32 rows, int8 leaving more than 5% of them undecided switches it to bfloat16, and later heads of the same weight
start on bfloat16 (until the weight changes); the tokens are the same either way, only the time changes.

This is a CPU path, used from 2 rows on, and at one row for heads of 2^22 weights or more (50,257 x 128 and wider:
a batch-1 `generate` of 30 greedy tokens ran 4-22% faster at width 128, 23% at 256; at width 64 10% slower, so a
smaller head keeps the float32 product on the transposed copy; measured): the uncertain rows are gathered with
`nonzero`, whose shape depends on the data, and the rare resolution runs only when there is one (a branch on a CPU
tensor's shape). There is no device to wait for on a CPU; on a GPU `generate` keeps the float32 head, fixed shapes
and no branch.

Shapes: B rows, D width, V vocabulary, Vp = V padded to a multiple of 64, C = Vp / 64 chunks, K candidates.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GreedyHead"]

_CHUNK = 64
_CHUNKS_KEPT = 16
_CANDIDATES = 16
_MIN_VOCAB = 4096  # smaller heads: the float32 head is cheap enough
_MIN_ROWS = 2  # fewer rows: screened only from _MIN_ONE_ROW_ELEMENTS weights on (a smaller float32 product is cheap)
_MIN_ONE_ROW_ELEMENTS = 1 << 22  # V x D at one row: 50,257 x 128 and wider gain, x 64 loses (measured)
_PROBATION, _MAX_UNSURE = 32, 0.05  # int8 leaving > 5% of the first >= 32 rows undecided: switch to bfloat16
_PREPACK_ROWS = 24  # int8 below this many rows: oneDNN's prepacked weight (5-10% faster at 8-16 rows, measured)
# int8 from _PREPACK_ROWS rows to this many: `_int_mm` as (Vp, D) x (D, 32), the rows padded with zeros to 32, gives
# the screen vocabulary-major (Vp, 32), the product 7-10% faster than (B, D) x (D, Vp) and the chunk maxima (an amax
# over the middle of (C, 64, 32)) as fast as row-major; that amax is 3-6x slower at 24, 48 or 64 columns (measured)
_VOCAB_MAJOR_ROWS = 32
_ROOM = 1 + 2.0**-8  # relative room for the rounding of norms and sums (D <= 2^14: each is within D 2^-24)
_TINY = 2.0**-100  # absolute room: underflow of products (flushed denormals: at most D 2^-126 each)
_CACHE: dict[tuple[int, str], tuple[Any, dict[str, Any]]] = {}  # (id(weight), kind) -> (key, copy and norms)
_KIND: dict[str, Any] = {}  # "kind": the screen this CPU runs; "bf16", "prepack": whether those kernels run
_INT32_MIN = torch.iinfo(torch.int32).min


class GreedyHead:
    """`greedy_token(F.linear(h, weight))` for h (B, D) float32 -> (B,) int64, by a screen (see module).

    `kind`: "int8" or "bf16", the screen's arithmetic (`build` picks int8 where `torch._int_mm` runs on VNNI).
    """

    def __init__(self, weight: torch.Tensor, rows: int, kind: str = "int8") -> None:
        if kind not in ("int8", "bf16"):
            raise ValueError(f"kind must be 'int8' or 'bf16', got {kind!r}")
        self.weight = weight.detach()  # (V, D) float32, the reference
        self.param = weight  # the caches are keyed by the parameter itself
        self.rows, self.kind = rows, kind
        self.vocab, self.dim = weight.shape
        self.chunks = -(-self.vocab // _CHUNK)  # C
        self.kept = min(_CHUNKS_KEPT, self.chunks)
        self.seen = self.unsure = 0  # rows screened, rows the screen could not decide
        self._use(kind)

    def _use(self, kind: str) -> None:
        """Screen with `kind` from now on: its weight copy (cached per parameter) and the bound's constants."""
        self.kind = kind
        self.packed, stats = _screen_copy(self.param, self.rows, self.chunks * _CHUNK, kind)
        n = self.dim * 2.0**-24
        gamma = n / (1 - n)
        w_max, dw_max, wq_max, self.scale_w = stats
        if kind == "bf16":
            # ||h - h'|| <= 2^-8 ||h|| and ||h'|| <= (1 + 2^-8) ||h|| (round to nearest): the bound per row is
            # ||h|| (2^-8 w_max + (1 + 2^-8) (dw_max + g wq_max) + 2 g w_max) + 2^-6 |T| (see the module docstring)
            u = 2.0**-8
            self.per_norm = (u * w_max + (1 + u) * (dw_max + gamma * wq_max) + 2 * gamma * w_max) * _ROOM
        else:
            # per row, in units of s_h: ||h - h'|| / s_h <= r (1 + g) + 2^-22 ||q_h|| (r = ||h / s_h - q_h|| as
            # computed: h / s_h is rounded once, 2^-24 relative) and ||h|| <= ||h'|| + ||h - h'||, so
            # E / s_h <= r a1 + ||q_h|| a2 with the constants below (the 2 g term is the float32 logits' rounding)
            self.per_r = (1 + gamma) * (1 + 2 * gamma) * w_max * _ROOM
            self.per_q = (2.0**-22 * (w_max + dw_max) + dw_max + 2 * gamma * w_max) * _ROOM

    @classmethod
    def build(cls, module: nn.Module, rows: int) -> GreedyHead | None:
        """A screened head for `rows` rows, or None where it does not apply (one row of a head under 2^22 weights,
        not a bias-free float32 CPU `nn.Linear` with a vocabulary of at least 4096, a hook on it, or neither an int8
        nor a bfloat16 kernel)."""
        if type(module) is not nn.Linear or module.bias is not None or module._forward_hooks:
            return None
        if module._forward_pre_hooks:
            return None
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.shape[0] < _MIN_VOCAB:
            return None
        kind = screen_kind()
        if kind == "int8" and _loose(weight):
            kind = "bf16"
        small = rows < _MIN_ROWS and weight.numel() < _MIN_ONE_ROW_ELEMENTS  # one row: float32 is as fast there
        if small or weight.shape[0] < 2 * _CANDIDATES or kind is None:
            return None
        return cls(weight, rows, kind)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, D) float32 -> (B,) the index of the largest float32 logit (the first one on ties)."""
        token, certain, screen, z_best, unit, bound = self._screen(h)
        unsure = (~certain).nonzero()[:, 0]  # (n,) rows the screen cannot decide (under 1% of random GPT-2 rows)
        if unsure.shape[0]:  # a CPU tensor's shape: nothing to wait for (this head only runs on a CPU)
            rows = self._resolve(h[unsure], screen[unsure], z_best[unsure], unit[unsure], bound[unsure])
            token = token.index_copy_(0, unsure, rows)
        self.seen, self.unsure = self.seen + h.shape[0], self.unsure + unsure.shape[0]
        if self.kind == "int8" and self.seen >= _PROBATION and self.unsure > _MAX_UNSURE * self.seen:
            if _bf16_available():  # the int8 bound is too loose for these weights / hidden states: bfloat16
                _CACHE[(id(self.param), "int8")][1]["loose"] = True  # and for the next heads of this weight
                self._use("bf16")
        return token

    def screen(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, D) -> (the best candidate (B,), whether it is certainly the float32 argmax (B,) bool)."""
        token, certain = self._screen(h)[:2]
        return token, certain

    def values(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, D) -> (the screen a (B, V) in logit units, float64, its bound |z - a| (B, V)) (for tests)."""
        _, _, screen, _, unit, bound = self._screen(h)
        a = screen[:, : self.vocab].double() * unit.double()[:, None]
        if self.kind == "bf16":
            return a, bound.double()[:, None] + 2.0**-6 * a.abs()
        return a, bound.double()[:, None].expand_as(a)

    def _resolve(
        self, h: torch.Tensor, screen: torch.Tensor, z_best: torch.Tensor, unit: torch.Tensor, bound: torch.Tensor
    ) -> torch.Tensor:
        """The float32 argmax of the rows h (n, D) the screen (n, Vp) did not decide, z_best (n,) the best
        candidate's logit, unit (n,) the screen's unit in logits, bound (n,) its error bound without the part
        relative to the screen's value: only the tokens whose screen value is within the bound of z_best can reach
        it, so only those are recomputed; a row with none (its bound NaN: NaN, inf or zero rows) takes the whole
        float32 head."""
        n = h.shape[0]
        a = screen[:, : self.vocab].double() * unit.double()[:, None]  # (n, V) the screen in logits (exact)
        rel = 2.0**-6 if self.kind == "bf16" else 2.0**-20
        window = a.abs().mul_(rel).add_(a).add_(bound.double()[:, None]) >= z_best.double()[:, None]
        rows, cols = window.nonzero().unbind(1)  # (m,) each: the tokens that may be the argmax
        exact = (F.embedding(cols, self.weight) * h[rows]).sum(dim=-1)  # (m,) float32 logits
        best = exact.new_full((n,), float("-inf")).scatter_reduce_(0, rows, exact, "amax")  # (n,)
        first = exact == best[rows]
        token = cols.new_full((n,), self.vocab).scatter_reduce_(0, rows[first], cols[first], "amin")  # (n,)
        odd = (token == self.vocab).nonzero()[:, 0]  # rows without a finite window
        full = F.linear(h.index_select(0, odd), self.weight).argmax(dim=-1)  # argmax: the first maximum
        return token.index_copy_(0, odd, full)

    def _kept_chunks(self, screen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """screen (P, Vp), row-major or the vocabulary-major view of `_int_mm`'s (Vp, P) -> (the G + 1 largest chunk
        maxima (P, G + 1), the kept chunks (P, G), their screen values (P, G * 64))."""
        p = screen.shape[0]
        if screen.stride(-1) == 1:  # row-major (or one row): whole rows of the (P C, 64) view
            top = screen.view(p, self.chunks, _CHUNK).amax(dim=-1).topk(min(self.kept + 1, self.chunks), dim=-1)
            chunk = top.indices[:, : self.kept]  # (P, G)
            flat = chunk.add(torch.arange(p)[:, None], alpha=self.chunks).view(-1)  # (P G,) rows of the view
            return top.values, chunk, screen.view(p * self.chunks, _CHUNK).index_select(0, flat).view(p, -1)
        by_chunk = screen.t().view(self.chunks, _CHUNK, p)  # (C, 64, P)
        top = by_chunk.amax(dim=1).t().topk(min(self.kept + 1, self.chunks), dim=-1)  # (P, G + 1)
        chunk = top.indices[:, : self.kept]  # (P, G)
        return top.values, chunk, by_chunk[chunk, :, torch.arange(p)[:, None]].view(p, -1)  # (P, G * 64)

    def _product(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, D) -> (screen (P, Vp) int32 or float32 with the padding at its minimum (P = B, or 32 zero-padded
        rows for the vocabulary-major product), unit (B,) the screen's unit in logits, bound (B,) the error bound
        without its part relative to |T|)."""
        if self.kind == "bf16":
            hb = h.to(torch.bfloat16)
            screen = torch.ops.mkldnn._linear_pointwise(hb, self.packed, None, "none", [], "").float()  # (B, Vp)
            screen[:, self.vocab :] = float("-inf")  # padding rows of the copy
            bound = h.norm(dim=-1).mul_(self.per_norm).add_(_TINY)  # (B,)
            return screen, torch.ones_like(bound), bound
        scale = h.abs().amax(dim=-1, keepdim=True).div_(127.0)  # (B, 1) s_h
        x = h / scale  # (B, D) in [-127, 127]; NaN for NaN, inf and zero rows
        q = x.round()
        if isinstance(self.packed, tuple):  # oneDNN's prepacked u8 x s8 product: q_h + 128, zero point 128
            packed, ones, zeros = self.packed
            qx = q.add(128.0).to(torch.uint8)
            screen = torch.ops.onednn.qlinear_pointwise(
                qx, 1.0, 128, packed, ones, zeros, None, 1.0, 0, torch.float32, "none", [], ""
            )  # (B, Vp) the exact int32 sums as float32 (scales 1; exact below 2^24, relative 2^-24 above)
            screen[:, self.vocab :] = float("-inf")  # padding columns
        elif _PREPACK_ROWS <= h.shape[0] <= _VOCAB_MAJOR_ROWS:  # vocabulary-major (see `_VOCAB_MAJOR_ROWS`)
            q8 = F.pad(q.to(torch.int8), (0, 0, 0, _VOCAB_MAJOR_ROWS - h.shape[0]))  # (32, D), zero rows at the end
            screen = torch._int_mm(self.packed, q8.t())  # (Vp, 32) exact int32 sums
            screen[self.vocab :] = _INT32_MIN  # padding vocabulary rows
            screen = screen.t()  # (32, Vp), a vocabulary-major view (rows past B are zero)
        else:
            screen = torch._int_mm(q.to(torch.int8), self.packed.t())  # (B, Vp) exact int32 sums
            screen[:, self.vocab :] = _INT32_MIN  # padding columns
        r = x.sub_(q).norm(dim=-1)  # (B,) ||h / s_h - q_h||, NaN on the rows above
        bound = q.norm(dim=-1).mul_(self.per_q).add_(r, alpha=self.per_r).mul_(scale[:, 0]).add_(_TINY)  # (B,)
        return screen, scale[:, 0] * self.scale_w, bound

    def _screen(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(best candidate (B,), certain (B,), screen (B, Vp), best candidate's logit (B,), unit (B,), bound
        (B,))."""
        b = h.shape[0]
        screen, unit, bound = self._product(h)  # screen (P, Vp), P >= B: zero rows the kernel ran on at the end
        top, chunk, inside = (t[:b] for t in self._kept_chunks(screen))  # (B, G + 1), (B, G), (B, G * 64)
        screen = screen[:b]
        best = inside.topk(_CANDIDATES + 1, dim=-1)  # (B, K + 1)
        col = best.indices[:, :_CANDIDATES]  # (B, K)
        tokens = (col % _CHUNK).add_(chunk.gather(1, col // _CHUNK), alpha=_CHUNK)  # (B, K) token ids
        tokens = tokens.clamp_(max=self.vocab - 1)  # a padding column: only in rows whose screen is not finite
        threshold = best.values[:, _CANDIDATES]  # (B,) every token that is not a candidate is <= threshold
        if self.chunks > self.kept:
            threshold = torch.maximum(threshold, top[:, self.kept])
        exact = (F.embedding(tokens, self.weight) * h[:, None]).sum(dim=-1)  # (B, K) float32 logits (bmm: 6x slower)
        z_best = exact.amax(dim=-1)  # (B,)
        token = torch.where(exact == z_best[:, None], tokens, self.vocab).amin(dim=-1)  # (B,) the first maximum
        limit = threshold.float().mul_(unit)  # (B,) T in logits
        # certain: z_best > T + E, E = bound + the part relative to |T|: bfloat16, the screen's output rounding
        # (relative 2^-8 when rounded to nearest, 2^-7 if truncated, with room); int8, the scaling of T (float32)
        rel = 2.0**-6 if self.kind == "bf16" else 2.0**-20
        limit = limit.abs().mul_(rel).add_(limit).add_(bound)
        return token, z_best > limit, screen, z_best, unit, bound


def _screen_copy(
    weight: torch.Tensor, rows: int, padded: int, kind: str
) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """The screen's copy of weight (V, D), padded with zero rows to `padded`: int8 (Vp, D) (`_int_mm(copy, q.t())`
    gives the screen vocabulary-major) or prepacked for oneDNN, or bfloat16 packed for oneDNN at `rows` rows; and the
    maxima over the vocabulary of ||w_v||, ||w_v - w'_v||, ||w'_v|| with the int8 scale s_w (1 for bfloat16);
    cached per weight, kind and version."""
    prepack = kind == "int8" and rows < _PREPACK_ROWS and _prepack_available()
    key = (rows if kind == "bf16" or prepack else 0, padded, weight.data_ptr(), weight._version)
    hit = _CACHE.get((id(weight), kind))
    if hit is None or hit[0] != key:
        with torch.no_grad():
            w = weight.double()
            if kind == "bf16":
                scale = 1.0
                wq = weight.to(torch.bfloat16)  # (V, D)
                wqd = wq.double()
            else:
                scale = float(weight.abs().max().div(127.0)) or 1.0  # s_w, a float32 number; zero weights: any scale
                wq = (weight / scale).round_().clamp_(-127, 127).to(torch.int8)  # (V, D)
                wqd = wq.double() * scale  # exactly w' (a float32 number times a small integer)
            stats = (
                float(w.norm(dim=-1).max()) * (1 + 2.0**-20),
                float((w - wqd).norm(dim=-1).max()) * (1 + 2.0**-20),
                float(wqd.norm(dim=-1).max()) * (1 + 2.0**-20),
                scale,
            )
            wq = F.pad(wq, (0, 0, 0, padded - weight.shape[0]))  # (Vp, D)
            if kind == "bf16":
                copy = torch.ops.mkldnn._reorder_linear_weight(wq, rows)
            else:
                copy = wq  # (Vp, D), the layout `_int_mm` reads as either operand
            if prepack:
                packed = torch.ops.onednn.qlinear_prepack(wq, [rows, wq.shape[1]])
                copy = (packed, torch.ones(padded), torch.zeros(padded, dtype=torch.long))
        if hit is None:
            weakref.finalize(weight, _CACHE.pop, (id(weight), kind), None)
        hit = _CACHE[(id(weight), kind)] = (key, {"copy": copy, "stats": stats})
    return hit[1]["copy"], hit[1]["stats"]


def _loose(weight: torch.Tensor) -> bool:
    """Whether an int8 screen of this weight (as it is now) switched to bfloat16 (see `GreedyHead.__call__`)."""
    hit = _CACHE.get((id(weight), "int8"))
    return hit is not None and hit[0][2:] == (weight.data_ptr(), weight._version) and hit[1].get("loose", False)


def clear_cache() -> None:
    """Forget the screens' weight copies (rebuilt on the next use)."""
    _CACHE.clear()


def screen_kind() -> str | None:
    """The screen this CPU runs (decided once per process): "int8" where `torch._int_mm` runs exactly and the CPU
    has VNNI dot products, else "bf16" where oneDNN's bfloat16 linear runs, else None."""
    if "kind" not in _KIND:
        _KIND["kind"] = "int8" if _int8_available() else "bf16" if _bf16_available() else None
    return _KIND["kind"]


def _int8_available() -> bool:
    """Whether `torch._int_mm` runs here, exactly, on a CPU with VNNI (without it bfloat16 is as fast)."""
    try:
        if not torch.cpu._is_vnni_supported():
            return False
        a = torch.randint(-127, 128, (3, 40), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
        b = torch.randint(-127, 128, (72, 40), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
        return bool(torch.equal(torch._int_mm(a, b.t()).long(), a.long() @ b.long().t()))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _prepack_available() -> bool:
    """Whether oneDNN's prepacked int8 linear (`torch.ops.onednn.qlinear_*`) runs here and gives the exact sums."""
    if "prepack" not in _KIND:
        try:
            g = torch.Generator().manual_seed(0)
            a = torch.randint(-127, 128, (3, 40), dtype=torch.int8, generator=g)
            b = torch.randint(-127, 128, (72, 40), dtype=torch.int8, generator=g)
            packed = torch.ops.onednn.qlinear_prepack(b, [3, 40])
            got = torch.ops.onednn.qlinear_pointwise(
                (a.int() + 128).to(torch.uint8), 1.0, 128, packed, torch.ones(72), torch.zeros(72, dtype=torch.long),
                None, 1.0, 0, torch.float32, "none", [], "",
            )
            _KIND["prepack"] = bool(torch.equal(got, (a.long() @ b.long().t()).float()))
        except (AttributeError, RuntimeError, NotImplementedError):
            _KIND["prepack"] = False
    return bool(_KIND["prepack"])


def _bf16_available() -> bool:
    """Whether oneDNN's bfloat16 linear runs here (checked once per process)."""
    if "bf16" not in _KIND:
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            if ok:
                w, x = torch.randn(64, 32), torch.randn(3, 32)
                packed = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), 3)
                got = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), packed, None, "none", [], "").float()
                ok = bool(torch.allclose(got, F.linear(x, w), atol=0.1, rtol=0.05))
            _KIND["bf16"] = ok
        except (AttributeError, RuntimeError, NotImplementedError):
            _KIND["bf16"] = False
    return bool(_KIND["bf16"])
