"""CUDA-graph decoding: one decode step captured once, replayed every step, on a cache kept across `generate` calls.

A decode step of a small decoder is a few hundred short kernels, and on a GPU the host's time to launch them, not the
device, bounds the step. A CUDA graph records the step's kernels once and launches them all with one call
(`torch.cuda.CUDAGraph`). A graph replays on the memory it was captured on, so everything the step reads or writes
lives in static buffers: its inputs (tokens, cache slot, positions) are copied in before each replay, its output is
the same tensor every time, and the cache is one kept per decoder and shape. `generate(..., cuda_graph=True)`:

1. prefills a new cache as always (variable prompt, one pass), then copies it into the kept cache of that shape (for
   beam search, each row `num_beams` times), so the first call of a shape captures and later calls only copy; the
   kept cache has the call's slots rounded up to a multiple of `SLOT_ROUND`, so calls whose prompt + new tokens
   round alike share a capture (the slots past the call's own are hidden);
2. runs the fixed-step loop with `GraphedStep` as the step: copy the inputs, replay, hand back the static output
   (the loop reads it before the next replay).

The step's kernels are whatever `generate` would run (the fused `FastStep`, or the `torch.compile`d step with
`compile_step=True`); they read the parameters where they are, so in-place weight updates (optimizer steps) are seen.
The key of a kept step holds the parameters' addresses and every module's plain Python attributes, so a new parameter
tensor (`.to()`, a new module) or a changed flag (a LoRA merge: the weight changes and the delta branch goes) gives a
new capture. Hooks would run only while capturing, so a hooked or training decoder (and `return_cross_attentions`)
is refused. At most `MAX_KEPT` shapes are kept per decoder (least recently used dropped); `release_graphs(decoder)`
drops them all.

Shapes: B rows (images x beams), Bi images, H heads, L cache slots, Ni image tokens, Dh head width, V vocabulary.
"""

from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlblocks.generation.cache import StaticCache

__all__ = ["MAX_KEPT", "SLOT_ROUND", "GraphedStep", "kept_step", "release_graphs"]

MAX_KEPT = 4  # captured shapes kept per decoder
SLOT_ROUND = 64  # a kept cache's slots: the call's prompt + new tokens rounded up to a multiple of this
_KEPT: weakref.WeakKeyDictionary[nn.Module, OrderedDict[tuple, GraphedStep]] = weakref.WeakKeyDictionary()
_DEVICES = ("cuda",)  # where a capture runs (tests add "cpu" with an eager stand-in for `_capture`)


def check_graphable(decoder: nn.Module, device: torch.device, *, hooked: bool, recorded: bool) -> None:
    """Refuse `cuda_graph=True` where a replay would not compute what the eager step does."""
    if device.type not in _DEVICES:
        raise ValueError(f"cuda_graph=True needs the decoder and inputs on a CUDA device, got device {device.type!r}")
    if recorded:
        raise ValueError("cuda_graph=True cannot return cross-attentions (a replay runs no hook): pass "
                         "return_cross_attentions=None, or cuda_graph=False")
    if hooked:
        raise ValueError("cuda_graph=True needs the decoder in eval mode, with fused attention and no hooks (a "
                         "replay runs no hook and draws no dropout), got "
                         f"training={decoder.training} or a hooked / unfused module")


class GraphedStep:
    """A decode step bound to one static cache: call it as the step, `step(decoder, cache, tokens, slot, position)`.

    The first call captures `step_fn` on the static inputs (after warm-up runs on a side stream, as CUDA graphs
    need); every call copies tokens (B, 1), slot (1,) and positions (B, 1) into the static inputs and replays.
    Returns the static output (B, V) logits or (B,) tokens, overwritten by the next replay.
    """

    def __init__(self, step_fn: Callable[..., torch.Tensor], cache: StaticCache) -> None:
        rows, device = cache.key_mask.shape[0], cache.key_mask.device
        self.step_fn, self.cache = step_fn, cache
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=device)  # (B, 1)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # (1,)
        self.position = torch.zeros(rows, 1, dtype=torch.long, device=device)  # (B, 1)
        self.replay: Callable[[], None] | None = None
        self.out: torch.Tensor | None = None

    def __call__(
        self, decoder: Any, cache: StaticCache, tokens: torch.Tensor, slot: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        if cache is not self.cache:
            raise RuntimeError("a GraphedStep runs on the cache it was captured with (the cache kept_step returned)")
        self.tokens.copy_(tokens)
        self.slot.copy_(slot)
        self.position.copy_(position)
        if self.replay is None:
            self.replay, self.out = _capture(
                lambda: self.step_fn(decoder, self.cache, self.tokens, self.slot, self.position), self.tokens.device
            )
        self.replay()
        return self.out


def kept_step(
    decoder: nn.Module, live: StaticCache, *, repeat: int, kind: str, step_fn: Callable[..., torch.Tensor]
) -> tuple[GraphedStep, StaticCache]:
    """The kept `GraphedStep` for this decoder and shape (made with `step_fn` if new), its cache loaded with `live`
    (each row `repeat` times: the beams). Returns (step, the static cache the loop must use)."""
    rows = live.key_mask.shape[0] * repeat
    slots = -(-live.max_len // SLOT_ROUND) * SLOT_ROUND  # calls whose lengths round alike share one capture
    key = (
        kind,
        rows,
        slots,
        tuple(None if kv is None else tuple(kv[0].shape) for kv in live.cross_kv),
        live.key_mask.device,
        live.layers[0].k.dtype,
        tuple(t.data_ptr() for t in itertools.chain(decoder.parameters(), decoder.buffers())),
        _python_state(decoder),
    )
    kept = _KEPT.setdefault(decoder, OrderedDict())
    step = kept.get(key)
    if step is None:
        step = kept[key] = GraphedStep(step_fn, _empty_like(live, rows, slots))
        while len(kept) > MAX_KEPT:
            kept.popitem(last=False)
    kept.move_to_end(key)
    step.cache.load_(live, repeat=repeat)
    return step, step.cache


def _python_state(decoder: nn.Module) -> tuple:
    """Every module's plain Python attributes (`training`, LoRA's `merged` and `scaling`, `eps`, ...): a replay runs
    none of the Python that reads them, so a change (a LoRA merge, a new scale) must mean a new capture."""
    plain = (bool, int, float, str, type(None))
    return tuple(
        (name, tuple(sorted((k, v) for k, v in vars(m).items() if isinstance(v, plain))))
        for name, m in decoder.named_modules()
    )


def release_graphs(decoder: nn.Module) -> None:
    """Drop the captured steps and kept caches of `decoder` (their memory is freed once nothing else holds them)."""
    _KEPT.pop(decoder, None)


def _empty_like(live: StaticCache, rows: int, slots: int) -> StaticCache:
    """A zero cache of `rows` rows and `slots` slots with `live`'s heads, image keys / values shapes, dtype and
    device."""
    _, heads, _, dim_head = live.layers[0].k.shape
    cross = [None if kv is None else (torch.zeros_like(kv[0]), torch.zeros_like(kv[1])) for kv in live.cross_kv]
    return StaticCache.allocate(batch=rows, depth=len(live.layers), heads=heads, dim_head=dim_head, max_len=slots,
                                cross_kv=cross, device=live.key_mask.device, dtype=live.layers[0].k.dtype)


def _capture(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[Callable[[], None], torch.Tensor]:
    """Capture `fn` in a CUDA graph -> (replay, its static output). Warm-up runs on a side stream first (lazy
    initialisations, cuBLAS workspaces); they compute the same step on the same inputs, so writing the same cache
    slot is harmless."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out
