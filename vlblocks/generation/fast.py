"""The lean decode step `generate` runs at inference: `decode_step`'s function with less work per token.

A decode step of a small decoder is mostly overhead, and on CPU the LM head's matrix product is the rest: MKL's
small-batch product on `nn.Linear`'s (out, in) layout runs several times below the memory bandwidth (4x at one row
and width 128). `FastStep` computes exactly `decode_step` (the same operations on the same values; tested to 1e-5
and on HF's greedy tokens) with:

- the self-attention bias (key padding + the slots not written yet) built once per step for every layer, instead of
  per layer, and queries / keys / values reshaped by views; on CPU the one query per row attends by two batched
  products (the fused kernel's per-(row, head) overhead is larger than the work), elsewhere by
  `scaled_dot_product_attention`;
- on CPU, one row with two intra-op threads or more: the large float32 projections whose output rows split evenly
  run as one batched product over slices of a view of the weight (MKL keeps a one-row product on one thread; the
  batched one runs its slices on all), nothing copied;
- otherwise on CPU, the large float32 projections (LM head, GPT-2-small layers) run on a copy of the weight laid
  out for the kernel: transposed (in, out) for one row (a matrix-vector product at the bandwidth), pre-packed for
  oneDNN (`torch.ops.mkldnn._reorder_linear_weight`) for more rows. A copy is cached per parameter and rebuilt when the
  parameter's storage or version counter changes (optimizer steps, `load_state_dict`, LoRA merges all bump it; a
  write through `.data` does not: call `clear_weight_cache()` after one). On a GPU nothing is copied.

`FastStep.build` returns None, and `generate` keeps `decode_step`, when the decoder is training, a module has a hook
(`record_attention`, `return_cross_attentions`) or an attention is on its manual path. Layers that are not plain
`nn.Linear` (LoRA) are called as modules, so their deltas apply.

Shapes: B rows, Bi images (B = Bi * G beams), D width, H heads, Dh head width, L cache slots, Ni image tokens,
V vocabulary.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks.generation.cache import StaticCache
from vlblocks.generation.sampling import greedy_token
from vlblocks.generation.screen import GreedyHead
from vlblocks.generation.screen import clear_cache as clear_screen_cache

__all__ = ["FastStep", "clear_weight_cache", "fast_linear"]

_PACK_MIN_ELEMENTS = 1 << 18  # smaller weights: F.linear is faster than a re-laid-out copy (less call overhead)
_CACHE: dict[int, tuple[Any, torch.Tensor]] = {}  # id(weight) -> (key, re-laid-out copy); dropped with the weight
_ONEDNN: dict[str, bool] = {}
_MAX_PARTS, _MIN_PART_ROWS = 16, 128  # one-row products split across threads (see `_split_parts`)


def clear_weight_cache() -> None:
    """Forget every re-laid-out weight copy, the greedy screens' int8 / bfloat16 copies included (rebuilt on the next
    `generate`)."""
    _CACHE.clear()
    clear_screen_cache()


def fast_linear(module: nn.Module, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing `module(x)` for x (rows, in): a re-laid-out weight where that is faster, else the module.

    Only a plain float32 CPU `nn.Linear` without hooks and with at least 2**18 weights is re-laid out; other plain
    `nn.Linear` layers become a direct `F.linear` call (no module call overhead); anything else (LoRA layers, hooked
    layers) is returned as is.
    """
    if type(module) is not nn.Linear or _hooked(module):
        return module
    weight, bias = module.weight, module.bias
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.numel() < _PACK_MIN_ELEMENTS:
        return lambda x: F.linear(x, weight, bias)
    parts = _split_parts(weight.shape[0]) if rows == 1 else 1
    if parts > 1:
        return _split_linear(weight, bias, parts)
    if rows == 1 and weight.shape[0] < weight.shape[1]:  # out < in: MKL's (out, in) product is the faster one
        return lambda x: F.linear(x, weight, bias)
    kind = "t" if rows == 1 or not _onednn_available() else ("onednn", rows)
    key = (kind, weight.data_ptr(), weight._version)
    hit = _CACHE.get(id(weight))
    if hit is None or hit[0] != key:
        with torch.no_grad():
            if kind == "t":
                laid = weight.detach().t().contiguous()  # (in, out)
            else:
                laid = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)  # oneDNN blocked layout
        if hit is None:
            weakref.finalize(weight, _CACHE.pop, id(weight), None)
        hit = _CACHE[id(weight)] = (key, laid)
    laid = hit[1]
    b = None if bias is None else bias.detach()
    if kind == "t":
        return (lambda x: torch.addmm(b, x, laid)) if b is not None else (lambda x: torch.mm(x, laid))
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, laid, b, "none", [], "")


def _split_parts(out_features: int) -> int:
    """How many slices of output rows a one-row product is cut into: one per intra-op thread (MKL runs a one-row
    product on one thread whatever the setting; a batched product over the slices runs them on all), at most
    `_MAX_PARTS`, each of at least `_MIN_PART_ROWS` rows and all equal; 1 (do not split) if no such cut exists."""
    parts = min(torch.get_num_threads(), _MAX_PARTS, out_features // _MIN_PART_ROWS)
    while parts > 1 and out_features % parts:
        parts -= 1
    return max(parts, 1)


def _split_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, parts: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`F.linear(x, weight, bias)` for one row x (1, in) as one batched product over `parts` slices of the output
    rows: a view of the weight (P, in, out / P), nothing copied; the slices' results are the output in order."""
    out, d = weight.shape
    w = weight.detach().view(parts, out // parts, d).transpose(1, 2)  # (P, in, out / P)
    if bias is None:
        return lambda x: torch.bmm(x.expand(parts, 1, d), w).view(1, out)
    b = bias.detach().view(parts, 1, out // parts)  # (P, 1, out / P)
    return lambda x: torch.baddbmm(b, x.expand(parts, 1, d), w).view(1, out)


def _onednn_available() -> bool:
    """Whether the oneDNN packed linear runs here and equals F.linear (checked once per process)."""
    if "ok" not in _ONEDNN:
        try:
            w, x = torch.randn(64, 32), torch.randn(3, 32)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
            got = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            _ONEDNN["ok"] = bool(torch.allclose(got, F.linear(x, w), atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN["ok"] = False
    return _ONEDNN["ok"]


def _direct(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain `nn.LayerNorm` / `nn.GELU` without hooks as a direct functional call (no module call overhead; the
    same operation on the same parameters), anything else as is."""
    if _hooked(module):
        return module
    if type(module) is nn.LayerNorm:
        return lambda x: F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    if type(module) is nn.GELU:
        return lambda x: F.gelu(x, approximate=module.approximate)
    return module


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


class _Layer:
    """The callables of one GPT-2 block, resolved once per `generate` call."""

    def __init__(self, block: Any, rows: int) -> None:
        attn = block.attn
        self.ln_1, self.ln_2 = _direct(block.ln_1), _direct(block.ln_2)
        self.c_attn, self.attn_proj = fast_linear(attn.c_attn, rows), fast_linear(attn.c_proj, rows)
        self.heads, self.scale = attn.heads, attn.scale
        self.has_cross = block.has_cross
        if self.has_cross:
            cross = block.crossattention
            self.ln_cross = _direct(block.ln_cross_attn)
            self.q_attn, self.cross_proj = fast_linear(cross.q_attn, rows), fast_linear(cross.c_proj, rows)
            self.cross_scale = cross.scale
        mlp = block.mlp
        self.c_fc, self.act, self.mlp_proj = fast_linear(mlp.c_fc, rows), _direct(mlp.act), fast_linear(mlp.c_proj, rows)


class FastStep:
    """`decode_step` for one `generate` call: call it as `step(decoder, cache, tokens, slot, position)`.

    With `greedy=True` the step returns the greedy tokens (B,) instead of the logits (`picks_tokens`), and so does
    `head`: through `GreedyHead` where it applies (CPU, float32, 2 rows or more or a large head, an int8 or bfloat16
    kernel), else the first maximum of the float32 logits.
    """

    def __init__(self, decoder: Any, rows: int, *, greedy: bool = False) -> None:
        tr = decoder.transformer
        self.wte, self.wpe, self.ln_f = tr.wte.weight, tr.wpe.weight, _direct(tr.ln_f)
        self.layers = [_Layer(block, rows) for block in tr.h]
        self.greedy = greedy
        self.greedy_head = GreedyHead.build(decoder.lm_head, rows) if greedy else None
        self.lm_head = None if self.greedy_head is not None else fast_linear(decoder.lm_head, rows)
        self.slots: torch.Tensor | None = None
        self.cross: tuple[Any, list[Any]] | None = None  # (the cache's cross_kv list, its prepared form)

    @property
    def picks_tokens(self) -> bool:
        """Whether the step (and `head`) return greedy tokens (B,) rather than logits (B, V)."""
        return self.greedy

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, D) -> logits (B, V) float32, or the greedy tokens (B,) (`picks_tokens`)."""
        if self.greedy_head is not None:
            return self.greedy_head(h)
        logits = self.lm_head(h).float()
        if not self.greedy:
            return logits
        return logits.argmax(dim=-1) if h.shape[0] == 1 else greedy_token(logits)  # (B,) the first maximum

    @classmethod
    def build(cls, decoder: Any, rows: int, *, greedy: bool = False) -> FastStep | None:
        """A fast step for `rows` rows, or None when only `decode_step` computes the decoder faithfully.

        `greedy`: the caller takes the argmax of the logits and nothing else (no scores, penalties or sampling).
        """
        return cls(decoder, rows, greedy=greedy) if cls.supports(decoder) else None

    @staticmethod
    def supports(decoder: Any) -> bool:
        """Whether the decoder is in eval mode with plain embeddings, fused attention and no hooks."""
        if decoder.training or torch.nn.modules.module._global_forward_hooks:
            return False
        if any(_hooked(m) or getattr(m, "fused", True) is False for m in decoder.modules()):
            return False
        tr = decoder.transformer
        return type(tr.wte) is nn.Embedding and type(tr.wpe) is nn.Embedding

    def __call__(
        self, decoder: Any, cache: StaticCache, tokens: torch.Tensor, slot: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """tokens (B, 1) at cache slot `slot` (1,), positions (B, 1) -> next logits (B, V) float32 (or the greedy
        tokens (B,), `picks_tokens`)."""
        b = tokens.shape[0]
        x = F.embedding(tokens[:, 0], self.wte) + F.embedding(position[:, 0], self.wpe)  # (B, D)
        if self.slots is None or self.slots.shape[0] != cache.max_len:
            self.slots = torch.arange(cache.max_len, device=x.device)  # (L,)
        allowed = cache.key_mask & (self.slots <= slot)  # (B, L): real and already written
        bias = torch.where(allowed, 0.0, torch.finfo(x.dtype).min).to(x.dtype)[:, None, None]  # (B, 1, 1, L)
        if self.cross is None or self.cross[0] is not cache.cross_kv:
            self.cross = (cache.cross_kv, [_prepare_cross(kv) for kv in cache.cross_kv])
        for layer, kv, cross_kv in zip(self.layers, cache.layers, self.cross[1]):
            x = self._block(layer, x, bias, kv, cross_kv, slot, b)
        return self.head(self.ln_f(x))

    @staticmethod
    def _block(
        layer: _Layer, x: torch.Tensor, bias: torch.Tensor, kv: Any, cross_kv: Any, slot: torch.Tensor, b: int
    ) -> torch.Tensor:
        """One GPT-2 block on x (B, D): causal self-attention over the cache, cross-attention, MLP."""
        h, d = layer.heads, x.shape[-1]
        qkv = layer.c_attn(layer.ln_1(x)).view(b, 3, h, 1, d // h)  # (B, 3, H, 1, Dh)
        q, k, v = qkv.unbind(1)  # 3 x (B, H, 1, Dh)
        kv.k.index_copy_(2, slot, k)  # the cache has x's dtype (prefill allocates it so)
        kv.v.index_copy_(2, slot, v)
        out = _self_attention(q, kv.k, kv.v, bias, layer.scale)  # (B, H, 1, Dh)
        x = x + layer.attn_proj(out.reshape(b, d))
        if layer.has_cross and cross_kv is not None:
            q = layer.q_attn(layer.ln_cross(x))  # (B, D)
            x = x + layer.cross_proj(_cross_attention(q, cross_kv, h, layer.cross_scale))  # (B, D)
        return x + layer.mlp_proj(layer.act(layer.c_fc(layer.ln_2(x))))


def _self_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """One query per row over the cache: q (B, H, 1, Dh), k / v (B, H, L, Dh), bias (B, 1, 1, L) -> (B, H, 1, Dh).

    On CPU two batched products (as `_cross_attention`): the fused SDPA kernel pays a per-(row, head) overhead that
    made a batch-32 greedy token of the tiny decoder 2-4% slower (A/B in one process; equal at 1 and 8 rows).
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    b, h, _, dh = q.shape
    n = k.shape[2]
    bias = bias.expand(b, h, 1, n).reshape(b * h, 1, n)  # (B H, 1, L)
    scores = torch.baddbmm(bias, q.reshape(b * h, 1, dh), k.reshape(b * h, n, dh).transpose(1, 2), alpha=scale)
    return torch.bmm(scores.softmax(dim=-1), v.reshape(b * h, n, dh)).view(b, h, 1, dh)


def _prepare_cross(kv: tuple[torch.Tensor, torch.Tensor] | None) -> Any:
    """Image keys / values (Bi, H, Ni, Dh) in the form `_cross_attention` reads: on CPU (keys^T (Bi H, Dh, Ni),
    values (Bi H, Ni, Dh)) views for two batched products; elsewhere as they are."""
    if kv is None or kv[0].device.type != "cpu":
        return kv
    k, v = kv
    bi, h, n, dh = k.shape
    return k.reshape(bi * h, n, dh).transpose(1, 2), v.reshape(bi * h, n, dh)


def _cross_attention(q: torch.Tensor, kv: Any, heads: int, scale: float) -> torch.Tensor:
    """Softmax attention of queries q (B, D) (B = Bi * G rows: G beams per image) over the image's keys / values
    (prepared by `_prepare_cross`) -> (B, D), no mask.

    On CPU two batched products: a few queries against many keys is a matrix-vector product per head, which the
    fused SDPA kernel runs about 2x slower at 32 rows (its blocking is for many queries).
    """
    b, d = q.shape
    dh = d // heads
    if isinstance(kv, tuple) and kv[0].dim() == 4:  # not prepared: a GPU
        k, v = kv  # (Bi, H, Ni, Dh)
        bi = k.shape[0]
        q = q.view(bi, b // bi, heads, dh).transpose(1, 2)  # (Bi, H, G, Dh)
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (Bi, H, G, Dh)
        return out.transpose(1, 2).reshape(b, d)
    k_t, v = kv  # (Bi H, Dh, Ni), (Bi H, Ni, Dh)
    bi = k_t.shape[0] // heads
    g = b // bi
    q = q.view(bi, g, heads, dh).transpose(1, 2).reshape(bi * heads, g, dh)  # (Bi H, G, Dh) (a view when G = 1)
    probs = torch.bmm(q, k_t).mul_(scale).softmax(dim=-1)  # (Bi H, G, Ni)
    out = torch.bmm(probs, v)  # (Bi H, G, Dh)
    return out.view(bi, heads, g, dh).transpose(1, 2).reshape(b, d)
