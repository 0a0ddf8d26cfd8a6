"""The lean decode step `generate` runs at inference: `decode_step`'s function with less work per token.

A decode step of a small decoder is mostly overhead, and on CPU the LM head's matrix product is the rest: MKL's
small-batch product on `nn.Linear`'s (out, in) layout runs several times below the memory bandwidth (4x at one row
and width 128). `FastStep` computes exactly `decode_step` (the same operations on the same values; tested to 1e-5
and on HF's greedy tokens) with:

- the self-attention bias (key padding + the slots not written yet) built once per step for every layer, instead of
  per layer, and queries / keys / values reshaped by views, attended by `scaled_dot_product_attention` directly;
- on CPU, the large float32 projections (LM head, GPT-2-small layers) run on a copy of the weight laid out for the
  kernel: transposed (in, out) for one row (a matrix-vector product at the bandwidth), pre-packed for oneDNN
  (`torch.ops.mkldnn._reorder_linear_weight`) for more rows. A copy is cached per parameter and rebuilt when the
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

__all__ = ["FastStep", "clear_weight_cache", "fast_linear"]

_PACK_MIN_ELEMENTS = 1 << 18  # smaller weights: F.linear is faster than a re-laid-out copy (less call overhead)
_CACHE: dict[int, tuple[Any, torch.Tensor]] = {}  # id(weight) -> (key, re-laid-out copy); dropped with the weight
_ONEDNN: dict[str, bool] = {}


def clear_weight_cache() -> None:
    """Forget every re-laid-out weight copy (they are rebuilt on the next `generate`)."""
    _CACHE.clear()


def fast_linear(module: nn.Module, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing `module(x)` for x (rows, in): a re-laid-out weight where that is faster, else the module.

    Only a plain float32 CPU `nn.Linear` without hooks and with at least 2**18 weights is re-laid out; anything else
    (LoRA layers, hooked or small layers, GPU) is returned as is.
    """
    if type(module) is not nn.Linear or _hooked(module):
        return module
    weight, bias = module.weight, module.bias
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.numel() < _PACK_MIN_ELEMENTS:
        return module
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


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


class _Layer:
    """The callables of one GPT-2 block, resolved once per `generate` call."""

    def __init__(self, block: Any, rows: int) -> None:
        attn = block.attn
        self.ln_1, self.ln_2 = block.ln_1, block.ln_2
        self.c_attn, self.attn_proj = fast_linear(attn.c_attn, rows), fast_linear(attn.c_proj, rows)
        self.heads, self.scale = attn.heads, attn.scale
        self.has_cross = block.has_cross
        if self.has_cross:
            cross = block.crossattention
            self.ln_cross = block.ln_cross_attn
            self.q_attn, self.cross_proj = fast_linear(cross.q_attn, rows), fast_linear(cross.c_proj, rows)
            self.cross_scale = cross.scale
        mlp = block.mlp
        self.c_fc, self.act, self.mlp_proj = fast_linear(mlp.c_fc, rows), mlp.act, fast_linear(mlp.c_proj, rows)


class FastStep:
    """`decode_step` for one `generate` call: call it as `step(decoder, cache, tokens, slot, position)`."""

    def __init__(self, decoder: Any, rows: int) -> None:
        tr = decoder.transformer
        self.wte, self.wpe, self.ln_f = tr.wte.weight, tr.wpe.weight, tr.ln_f
        self.layers = [_Layer(block, rows) for block in tr.h]
        self.lm_head = fast_linear(decoder.lm_head, rows)
        self.slots: torch.Tensor | None = None

    @classmethod
    def build(cls, decoder: Any, rows: int) -> FastStep | None:
        """A fast step for `rows` rows, or None when only `decode_step` computes the decoder faithfully."""
        if decoder.training or torch.nn.modules.module._global_forward_hooks:
            return None
        for module in decoder.modules():
            if _hooked(module) or getattr(module, "fused", True) is False:
                return None
        if type(decoder.transformer.wte) is not nn.Embedding or type(decoder.transformer.wpe) is not nn.Embedding:
            return None
        return cls(decoder, rows)

    def __call__(
        self, decoder: Any, cache: StaticCache, tokens: torch.Tensor, slot: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """tokens (B, 1) at cache slot `slot` (1,), positions (B, 1) -> next logits (B, V) float32."""
        b = tokens.shape[0]
        x = F.embedding(tokens[:, 0], self.wte) + F.embedding(position[:, 0], self.wpe)  # (B, D)
        if self.slots is None or self.slots.shape[0] != cache.max_len:
            self.slots = torch.arange(cache.max_len, device=x.device)  # (L,)
        allowed = cache.key_mask & (self.slots <= slot)  # (B, L): real and already written
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill_(~allowed, torch.finfo(x.dtype).min)[:, None, None]  # (B, 1, 1, L)
        for layer, kv, cross_kv in zip(self.layers, cache.layers, cache.cross_kv):
            x = self._block(layer, x, bias, kv, cross_kv, slot, b)
        return self.lm_head(self.ln_f(x)).float()

    @staticmethod
    def _block(
        layer: _Layer, x: torch.Tensor, bias: torch.Tensor, kv: Any, cross_kv: Any, slot: torch.Tensor, b: int
    ) -> torch.Tensor:
        """One GPT-2 block on x (B, D): causal self-attention over the cache, cross-attention, MLP."""
        h, d = layer.heads, x.shape[-1]
        qkv = layer.c_attn(layer.ln_1(x)).view(b, 3, h, 1, d // h)  # (B, 3, H, 1, Dh)
        q, k, v = qkv.unbind(1)  # 3 x (B, H, 1, Dh)
        kv.k.index_copy_(2, slot, k.to(kv.k.dtype))
        kv.v.index_copy_(2, slot, v.to(kv.v.dtype))
        out = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=bias, scale=layer.scale)  # (B, H, 1, Dh)
        x = x + layer.attn_proj(out.reshape(b, d))
        if layer.has_cross and cross_kv is not None:
            ck, cv = cross_kv  # (Bi, H, Ni, Dh)
            bi = ck.shape[0]
            q = layer.q_attn(layer.ln_cross(x)).view(bi, b // bi, h, d // h).transpose(1, 2)  # (Bi, H, G, Dh)
            out = F.scaled_dot_product_attention(q, ck, cv, scale=layer.cross_scale)  # (Bi, H, G, Dh)
            x = x + layer.cross_proj(out.transpose(1, 2).reshape(b, d))  # (B, D)
        return x + layer.mlp_proj(layer.act(layer.c_fc(layer.ln_2(x))))
