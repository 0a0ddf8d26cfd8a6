"""Cross-attention maps during generation: `generate(return_cross_attentions=[layers])` switches only those layers'
cross-attention to the manual path (the others stay on the fused kernel) and keeps, per step, the probabilities of
the query that produced the new token.

Shapes: B rows (Bi images x G beams), T new tokens, H heads, Nq queries, Ni image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange

from vlblocks._checks import check_int

__all__ = ["CrossAttentionRecorder", "check_layers", "pad_steps"]


class CrossAttentionRecorder:
    """Switch the selected layers' cross-attention to the manual path and keep the last query's probabilities."""

    def __init__(self, decoder: Any, layers: list[int]) -> None:
        self.modules = [decoder.transformer.h[i].crossattention for i in layers]
        self.layers, self.latest, self.handles, self.fused = layers, {}, [], []

    def __enter__(self) -> CrossAttentionRecorder:
        for layer, module in zip(self.layers, self.modules):
            self.fused.append(module.fused)
            module.fused = False
            self.handles.append(module.attn_probs.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, fused, handle in zip(self.modules, self.fused, self.handles):
            module.fused = fused
            handle.remove()

    def _hook(self, layer: int):
        def hook(module: Any, args: Any, probs: torch.Tensor) -> None:
            self.latest[layer] = probs  # (Bi, H, G * Nq, Ni)

        return hook

    def last_query(self, rows: int | None = None) -> dict[int, torch.Tensor]:
        """Per layer, the last query's probabilities per row (B, H, Ni) (rows = B when the beams share images)."""
        out = {}
        for layer, probs in self.latest.items():
            bi, _, gq, _ = probs.shape
            group = (rows or bi) // bi
            per_row = rearrange(probs, "b h (g n) k -> (b g) n h k", g=group)  # (B, Nq, H, Ni)
            out[layer] = per_row[:, -1]
        return out

    def stack(self, steps: list[dict[int, torch.Tensor]], total: int) -> dict[int, torch.Tensor]:
        """Per layer, (B, T, H, Ni); steps after an early stop are zeros."""
        return {layer: pad_steps(torch.stack([s[layer] for s in steps], dim=1), total) for layer in self.layers}


def pad_steps(maps: torch.Tensor, total: int) -> torch.Tensor:
    """Per-step maps (B, t, H, Ni) -> (B, total, H, Ni), zeros after step t (an early stop)."""
    if maps.shape[1] >= total:
        return maps
    return torch.cat([maps, maps.new_zeros(maps.shape[0], total - maps.shape[1], *maps.shape[2:])], dim=1)


def check_layers(decoder: Any, layers: Sequence[int] | None) -> list[int]:
    """`return_cross_attentions` checked: layer indices (negative ones counted from the end) -> [0, depth)."""
    if layers is None:
        return []
    depth = len(decoder.transformer.h)
    out = [check_int("return_cross_attentions", i, low=-depth, high=depth - 1) % depth for i in layers]
    for i in out:
        if not decoder.transformer.h[i].has_cross:
            raise ValueError(f"return_cross_attentions: layer {i} has no cross-attention")
    return out
