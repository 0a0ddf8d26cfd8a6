"""Recording attention probabilities of chosen layers of vlblocks, timm and HF transformers models.

`record_attention(model, layers)` is a context manager: inside it, each forward of a selected layer adds that layer's
attention probabilities `softmax(q k^T / sqrt(Dh) + mask)` (Vaswani et al. 2017) to the recording, in float32 also for
half-precision models. Only the selected layers change how they run; every other layer keeps its fused kernel, and all
state (flags, hooks, configs, patched functions) is restored on exit, also after an exception. How each kind of
module is reached is in `_backends.py`: vlblocks `Attention` switches to its manual path and is read through its
`attn_probs` submodule; fused timm and HF layers keep their kernel for the output and compute their probabilities
from the same q, k and mask on the side (so the model's outputs do not change at all).

Shapes: B batch, H heads, Nq queries, Nk keys, R recorded query rows.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from vlblocks._checks import check_choice, is_int
from vlblocks.hooks._backends import Slot, attention_kind, install

__all__ = ["AttentionRecording", "attention_layers", "record_attention"]

HEAD_REDUCTIONS = (None, "mean", "max", "min")


class AttentionRecording:
    """What `record_attention` yields: the maps of the selected layers, filled as the model runs.

    Attributes:
        layers: the selected layer names, in model order.
        history: layer name -> one tensor per forward call of that layer, oldest first.
        maps: layer name -> the tensor of its latest call: (B, H, Nq, Nk); (B, H, R, Nk) with `rows`;
            (B, Nq, Nk) or (B, R, Nk) with `head_reduce`. Always float32, detached.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers: tuple[str, ...] = tuple(layers)
        self.history: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}

    @property
    def maps(self) -> dict[str, torch.Tensor]:
        return {name: calls[-1] for name, calls in self.history.items() if calls}

    def clear(self) -> None:
        """Forget every recorded map (e.g. between batches of a long loop)."""
        for calls in self.history.values():
            calls.clear()

    def __repr__(self) -> str:
        calls = {name: len(c) for name, c in self.history.items()}
        return f"AttentionRecording(calls={calls})"


def attention_layers(model: nn.Module) -> list[str]:
    """Names of the attention layers `record_attention` can record in `model`, in model order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [name for name, module in model.named_modules() if attention_kind(module) is not None]


def _matches(name: str, pattern: str) -> bool:
    """A glob (`blocks.*.attn`) or a regular expression (`blocks\\.(0|11)\\.attn`) that matches the whole name."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _select(model: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    available = attention_layers(model)
    if not available:
        raise ValueError(
            f"{type(model).__name__} has no attention layer record_attention can record (vlblocks Attention, timm "
            "modules with a fused_attn flag, HF transformers attention modules)"
        )
    if layers is None:
        return available
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"layers must be None, a non-empty string or a list of them, got {layers!r}")
    for pattern in patterns:
        if not any(_matches(name, pattern) for name in available):
            raise ValueError(
                f"layers pattern {pattern!r} matches no attention layer; the attention layers are: {available}"
            )
    return [name for name in available if any(_matches(name, p) for p in patterns)]


def _check_rows(rows: object) -> int | list[int] | slice | None:
    if rows is None or isinstance(rows, slice) or is_int(rows):
        return rows if not is_int(rows) else int(rows)  # type: ignore[arg-type]
    if isinstance(rows, Sequence) and not isinstance(rows, str) and rows and all(is_int(r) for r in rows):
        return [int(r) for r in rows]
    raise ValueError(f"rows must be None, an int, a slice or a non-empty list of ints, got {rows!r}")


@contextmanager
def record_attention(
    model: nn.Module,
    layers: str | Sequence[str] | None = None,
    *,
    rows: int | Sequence[int] | slice | None = None,
    head_reduce: str | None = None,
) -> Iterator[AttentionRecording]:
    """Record the attention probabilities of the selected layers of `model` while the block runs.

    Args:
        model: a vlblocks, timm or HF transformers model (or any module holding their attention layers).
        layers: glob(s) or regular expression(s) over module names (see `attention_layers(model)`); None = all.
        rows: record only these query rows, e.g. ``rows=0`` for the CLS token's row: maps (B, H, R, Nk).
            Only those rows are computed on the layers that compute their probabilities on the side.
        head_reduce: None (keep heads), "mean", "max" or "min" over heads: maps (B, Nq, Nk) / (B, R, Nk).

    Yields:
        an `AttentionRecording`; `rec.maps[name]` holds the latest call's map of each layer.

    Raises:
        ValueError: a pattern matches no attention layer (the message lists them), or bad `rows` / `head_reduce`.
        RuntimeError: on leaving the block without an exception, when a selected layer recorded nothing.

    Example:
        >>> with record_attention(vit, "blocks.11.attn", rows=0) as rec:
        ...     logits = vit(images)
        >>> rec.maps["blocks.11.attn"].shape  # (B, H, 1, 1 + h*w)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    rows = _check_rows(rows)
    check_choice("head_reduce", head_reduce, HEAD_REDUCTIONS)
    names = _select(model, layers)
    recording = AttentionRecording(names)
    modules = dict(model.named_modules())
    undo: list[Callable[[], None]] = []
    try:
        for name in names:
            module = modules[name]
            slot = Slot(name, recording.history[name], rows, head_reduce)
            undo.append(install(attention_kind(module), module, slot))  # type: ignore[arg-type]
        yield recording
    finally:
        for restore in reversed(undo):
            restore()
    silent = [name for name, calls in recording.history.items() if not calls]
    if silent:
        raise RuntimeError(
            f"record_attention: selected layers recorded nothing: {silent} (run the model inside the with-block; "
            "check that these layers run in this forward, e.g. cross-attention needs encoder states)"
        )
