"""The static decoding cache: per-layer self-attention keys / values, the image's cross-attention keys / values, and
which slots hold real tokens.

Preallocated for prompt + `max_new_tokens`, written in place at slots given as tensors (vlblocks `KVCache`), so a
decode step has fixed shapes and never asks the host where it is. The image keys / values are computed once per image
and shared by every beam of that image (the decoder's cross-attention attends the beams' queries as one block).

Shapes: B rows (images x beams), Bi images, H heads, L slots (prefix + prompt + new tokens), Ni image tokens,
Dh head width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlblocks.layers.attention import KVCache

__all__ = ["StaticCache"]


@dataclass
class StaticCache:
    """Decoding state of a `GPT2Decoder`-like model.

    Attributes:
        layers: one `KVCache` (B, H, L, Dh) per layer.
        cross_kv: per layer, image keys / values (Bi, H, Ni, Dh), or None (no cross-attention).
        key_mask: (B, L) bool, False on left padding; slots not yet written are hidden by their position.
    """

    layers: list[KVCache]
    cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None]
    key_mask: torch.Tensor

    @classmethod
    def allocate(
        cls,
        *,
        batch: int,
        depth: int,
        heads: int,
        dim_head: int,
        max_len: int,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StaticCache:
        """Zero buffers for `depth` layers of (batch, heads, max_len, dim_head); every slot marked real."""
        layers = [KVCache(batch, heads, max_len, dim_head, device=device, dtype=dtype) for _ in range(depth)]
        key_mask = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        return cls(layers=layers, cross_kv=cross_kv or [None] * depth, key_mask=key_mask)

    @property
    def max_len(self) -> int:
        return self.key_mask.shape[1]

    def repeat_rows(self, times: int) -> None:
        """Each row becomes `times` consecutive rows (B -> B * times): the beams of a prefilled prompt.

        The image keys / values stay per image.
        """
        for layer in self.layers:
            layer.k = layer.k.repeat_interleave(times, dim=0)  # (B * times, H, L, Dh)
            layer.v = layer.v.repeat_interleave(times, dim=0)
        self.key_mask = self.key_mask.repeat_interleave(times, dim=0)  # (B * times, L)

    def load_(self, other: StaticCache, *, repeat: int = 1) -> None:
        """Copy `other` (B rows, L slots) into this cache (B * repeat rows: each row `repeat` times, the beams; L' >=
        L slots), in place: its first L slots; the slots after them are hidden (key mask False). The image keys /
        values stay per image. Other shapes must match (a CUDA graph's kept cache)."""
        n = other.max_len
        if n > self.max_len:
            raise ValueError(f"cannot load a cache of {n} slots into one of {self.max_len}")

        def rows(t: torch.Tensor) -> torch.Tensor:  # (B * repeat, ...) viewed as (B, repeat, ...)
            return t.view(-1, repeat, *t.shape[1:])

        for dst, src in zip(self.layers, other.layers):
            rows(dst.k)[:, :, :, :n].copy_(src.k[:, None])  # (B, repeat, H, L, Dh)
            rows(dst.v)[:, :, :, :n].copy_(src.v[:, None])
        rows(self.key_mask)[:, :, :n].copy_(other.key_mask[:, None])  # (B, repeat, L)
        self.key_mask[:, n:] = False
        for dst, src in zip(self.cross_kv, other.cross_kv):
            if dst is not None:
                dst[0].copy_(src[0])
                dst[1].copy_(src[1])

    def reorder(self, index: torch.Tensor) -> None:
        """Row i takes the content of row index[i] (B,), in place (buffers keep their addresses for CUDA graphs)."""
        for layer in self.layers:
            layer.k.copy_(layer.k.index_select(0, index))
            layer.v.copy_(layer.v.index_select(0, index))
        self.key_mask.copy_(self.key_mask.index_select(0, index))
