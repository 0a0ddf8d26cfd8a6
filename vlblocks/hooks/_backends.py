"""How `record_attention` reaches the probabilities of each kind of attention module (private).

Three kinds of modules, three ways in, and every other layer untouched:

- vlblocks `Attention`: switched to its manual path; a forward hook on its identity submodule `attn_probs` reads the
  float32 probabilities (DESIGN.md section 4).
- timm attention modules (anything with a `fused_attn` flag: `Attention` of ViT / DeiT / DINOv2, `EvaAttention`,
  ...): a fused module keeps calling `F.scaled_dot_product_attention`; while (and only while) a selected module runs,
  that name points to a tap that computes `softmax(q k^T * scale + mask)` in float32 from the very q, k and mask the
  kernel receives, then calls the kernel, so the output is bit-identical. A module already on timm's manual path
  (`fused_attn=False`) is read by a pre-hook on its `attn_drop`, which receives the probabilities.
- HF transformers attention modules (those that dispatch through `ALL_ATTENTION_FUNCTIONS`): the selected module gets
  its own shallow copy of the config whose `_attn_implementation` names a registered recording function; it computes
  the eager probabilities in float32 from q, k and the mask (read the way the model's own implementation reads it:
  eager, sdpa or flash) and then calls that implementation for the output. Other modules keep the shared config.

Shapes: B batch, H heads (Hkv key/value heads), Nq queries, Nk keys, R recorded query rows, Dh head width.
"""

from __future__ import annotations

import copy
import inspect
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Slot", "attention_kind", "eager_probs", "install"]

HF_IMPLEMENTATION = "vlblocks_record"
_HF_READABLE = (
    "eager",
    "sdpa",
)  # mask formats read exactly; names containing "flash" are read as padding masks


class Slot:
    """Where one selected layer's maps go: applies the row selection and the head reduction, then stores."""

    def __init__(
        self,
        name: str,
        store: list[torch.Tensor],
        rows: int | list[int] | slice | None,
        head_reduce: str | None,
    ) -> None:
        self.name, self.store, self.rows, self.head_reduce = name, store, rows, head_reduce

    def row_index(self, nq: int, device: torch.device) -> torch.Tensor | None:
        """The recorded query rows as an index (R,) into Nq queries, or None for all rows."""
        if self.rows is None:
            return None
        rows = [self.rows] if isinstance(self.rows, int) else self.rows
        try:
            index = torch.arange(nq)[rows]
        except IndexError as err:
            raise ValueError(
                f"rows must index the {nq} queries of layer {self.name!r}, got {self.rows!r}"
            ) from err
        return index.reshape(-1).to(device)

    def add_full(self, probs: torch.Tensor) -> None:
        """Record probabilities (B, H, Nq, Nk) of all rows."""
        index = self.row_index(probs.shape[-2], probs.device)
        if index is not None:
            probs = probs.index_select(-2, index)  # (B, H, R, Nk)
        self.add_rows(probs)

    def add_rows(self, probs: torch.Tensor) -> None:
        """Record probabilities (B, H, R, Nk) whose rows are already selected."""
        probs = probs.detach().float()
        if self.head_reduce == "mean":
            probs = probs.mean(dim=1)  # (B, R, Nk)
        elif self.head_reduce == "max":
            probs = probs.amax(dim=1)
        elif self.head_reduce == "min":
            probs = probs.amin(dim=1)
        self.store.append(probs)


def eager_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    causal_offset: int = 0,
    softcap: float | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention probabilities in float32, computed as an eager implementation would.

    Args:
        q: queries (B, H, Nq, Dh); k: keys (B, Hkv, Nk, Dh), Hkv dividing H (grouped-query attention).
        scale: factor on q k^T.
        mask: broadcastable to (B, H, Nq, Nk); bool (True = may attend) or float (added to the scores).
        causal: query i sees keys j <= i + causal_offset.
        softcap: scores become softcap * tanh(scores / softcap) before the mask.
        rows: only these query rows (R,).

    Returns:
        (B, H, R, Nk) float32 probabilities (R = Nq when rows is None).
    """
    nq, nk = q.shape[-2], k.shape[-2]
    qf = q.float() if rows is None else q.float().index_select(-2, rows)  # (B, H, R, Dh)
    kf = k.float()
    if kf.shape[1] != qf.shape[1]:
        kf = kf.repeat_interleave(qf.shape[1] // kf.shape[1], dim=1)  # (B, H, Nk, Dh)
    scores = torch.matmul(qf, kf.transpose(-2, -1)) * scale  # (B, H, R, Nk)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    lowest = torch.finfo(torch.float32).min
    if mask is not None:
        if rows is not None and mask.dim() >= 2 and mask.shape[-2] == nq and nq > 1:
            mask = mask.index_select(-2, rows)  # (..., R, Nk)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, lowest)
        else:
            scores = scores + mask.float()
    if causal:
        query_pos = torch.arange(nq, device=q.device) if rows is None else rows
        visible = torch.arange(nk, device=q.device)[None, :] <= query_pos[:, None] + causal_offset  # (R, Nk)
        scores = scores.masked_fill(~visible, lowest)
    return scores.softmax(dim=-1)


# --------------------------------------------------------------------------------------------- which kind of module


def attention_kind(module: nn.Module) -> str | None:
    """'vlblocks', 'timm', 'hf' or None (not an attention layer record_attention knows)."""
    from vlblocks.layers.attention import Attention

    if isinstance(module, Attention):
        return "vlblocks"
    if type(module).__module__.startswith("timm.") and isinstance(getattr(module, "fused_attn", None), bool):
        return "timm"
    if _dispatches_hf_attention(type(module)) and hasattr(module, "config"):
        return "hf"
    return None


_HF_CLASSES: dict[type, bool] = {}


def _dispatches_hf_attention(cls: type) -> bool:
    """True when the class's forward picks its kernel from HF's `ALL_ATTENTION_FUNCTIONS` (cached per class)."""
    if cls not in _HF_CLASSES:
        found = False
        if cls.__module__.startswith("transformers."):
            try:
                found = "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(cls.forward)
            except (OSError, TypeError):
                found = False
        _HF_CLASSES[cls] = found
    return _HF_CLASSES[cls]


def install(kind: str, module: nn.Module, slot: Slot) -> Callable[[], None]:
    """Start recording `module` into `slot`; returns the function that undoes everything this did."""
    if kind == "vlblocks":
        return _install_vlblocks(module, slot)
    if kind == "timm":
        return _install_timm(module, slot)
    return _install_hf(module, slot)


# ------------------------------------------------------------------------------------------------------------ vlblocks


def _install_vlblocks(module: nn.Module, slot: Slot) -> Callable[[], None]:
    was_fused = module.fused
    module.fused = False  # manual path: probabilities pass through module.attn_probs
    handle = module.attn_probs.register_forward_hook(lambda _m, _args, out: slot.add_full(out))

    def undo() -> None:
        handle.remove()
        module.fused = was_fused

    return undo


# ---------------------------------------------------------------------------------------------------------------- timm

_LOCAL = threading.local()  # .slot: the selected timm module running in this thread, if any
_TAP_LOCK = threading.Lock()
_TAP_STATE: dict[str, Any] = {"users": 0, "kernel": None}


def _sdpa_tap(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    """Stand-in for `F.scaled_dot_product_attention` while a selected timm module runs: record, then the kernel."""
    slot = getattr(_LOCAL, "slot", None)
    if slot is not None:
        rows = slot.row_index(query.shape[-2], query.device)
        scale_ = scale if scale is not None else query.shape[-1] ** -0.5
        slot.add_rows(eager_probs(query, key, scale=scale_, mask=attn_mask, causal=is_causal, rows=rows))
    return _TAP_STATE["kernel"](
        query,
        key,
        value,
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        **kwargs,
    )


def _tap_on() -> None:
    with _TAP_LOCK:
        if _TAP_STATE["users"] == 0:
            _TAP_STATE["kernel"] = F.scaled_dot_product_attention
            F.scaled_dot_product_attention = _sdpa_tap
        _TAP_STATE["users"] += 1


def _tap_off() -> None:
    with _TAP_LOCK:
        if _TAP_STATE["users"] == 0:
            return
        _TAP_STATE["users"] -= 1
        if _TAP_STATE["users"] == 0:
            F.scaled_dot_product_attention = _TAP_STATE["kernel"]
            _TAP_STATE["kernel"] = None


def _install_timm(module: nn.Module, slot: Slot) -> Callable[[], None]:
    if not module.fused_attn:  # timm's manual path: attn_drop receives the probabilities (B, H, Nq, Nk)
        drop = getattr(module, "attn_drop", None)
        if not isinstance(drop, nn.Module):
            raise ValueError(
                f"cannot record {slot.name!r} ({type(module).__name__}): fused_attn is False and it has no "
                "attn_drop submodule to read the probabilities from"
            )
        handle = drop.register_forward_pre_hook(lambda _m, args: slot.add_full(args[0]))
        return handle.remove

    outer: list[Slot | None] = []  # per running forward of this module: the slot active before it (nesting)

    def before(_m: nn.Module, _args: tuple) -> None:
        _tap_on()
        outer.append(getattr(_LOCAL, "slot", None))
        _LOCAL.slot = slot

    def after(_m: nn.Module, _args: tuple, _out: Any) -> None:
        if outer:
            _LOCAL.slot = outer.pop()
            _tap_off()

    pre = module.register_forward_pre_hook(before)
    post = module.register_forward_hook(after, always_call=True)

    def undo() -> None:
        pre.remove()
        post.remove()
        while outer:  # a forward that never reached its post-hook
            _LOCAL.slot = outer.pop()
            _tap_off()

    return undo


# ------------------------------------------------------------------------------------------------------- transformers

# selected HF module -> (its slot, the model's attn_implementation, the module file's eager_attention_forward)
_HF_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _hf_record(module: nn.Module, query, key, value, attention_mask, *args, **kwargs):
    """The attention function registered as `vlblocks_record`: record eager probabilities, then the real kernel."""
    slot, implementation, eager_fn = _HF_STATE[module]
    scaling = kwargs.get("scaling")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    nq, nk = query.shape[-2], key.shape[-2]
    mask, causal, offset = attention_mask, False, 0
    if implementation == "sdpa":  # sdpa's rule: no mask + a causal module -> top-left causal
        is_causal = kwargs.get("is_causal")
        is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(nq > 1 and attention_mask is None and is_causal)
    elif "flash" in implementation:  # flash: (B, Nk) padding mask, bottom-right causal
        if attention_mask is not None and attention_mask.dim() == 2:
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Nk)
        is_causal = kwargs.get("is_causal")
        causal = bool(nq > 1 and (is_causal if is_causal is not None else getattr(module, "is_causal", True)))
        offset = nk - nq
    rows = slot.row_index(nq, query.device)
    probs = eager_probs(
        query,
        key,
        scale=scale,
        mask=mask,
        causal=causal,
        causal_offset=offset,
        softcap=kwargs.get("softcap"),
        rows=rows,
    )
    slot.add_rows(probs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    kernel = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_fn)
    return kernel(module, query, key, value, attention_mask, *args, **kwargs)


def _install_hf(module: nn.Module, slot: Slot) -> Callable[[], None]:
    from transformers.modeling_utils import AttentionInterface

    config = module.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in _HF_READABLE and "flash" not in implementation:
        raise ValueError(
            f"cannot record {slot.name!r}: attn_implementation {implementation!r} is not supported "
            f"(supported: {list(_HF_READABLE)} and flash attention); load the model with attn_implementation='sdpa'"
        )
    eager_fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if implementation == "eager" and eager_fn is None:
        raise ValueError(
            f"cannot record {slot.name!r}: {type(module).__name__} has no eager_attention_forward"
        )
    AttentionInterface.register(HF_IMPLEMENTATION, _hf_record)
    own = copy.copy(config)  # this module alone dispatches to the recording function
    own._attn_implementation_internal = HF_IMPLEMENTATION
    _HF_STATE[module] = (slot, implementation, eager_fn)
    module.config = own

    def undo() -> None:
        module.config = config
        _HF_STATE.pop(module, None)

    return undo
