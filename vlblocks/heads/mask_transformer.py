"""Segmenter's mask-transformer head (Strudel et al. 2021, "Segmenter: Transformer for Semantic Segmentation").

C learned class embeddings are joined to the projected patch tokens and the N + C tokens pass through `depth`
pre-norm transformer blocks (vlblocks `Attention` + `Mlp`). After a final LayerNorm, patch and class tokens are
projected, L2-normalised, and their scalar products give one mask per class; a LayerNorm over the C classes
(Segmenter's `mask_norm`) turns them into logits, which are upsampled bilinearly:

    z       = [Linear(x) ; cls]                        (B, N + C, d)
    z       = Block_depth(... Block_1(z))              Block: z + Attn(LN z), then z + Mlp(LN z)
    p, c    = split(LN(z))                             (B, N, d), (B, C, d)
    p, c    = p W_p / |p W_p|,  c W_c / |c W_c|
    logits  = LN_C(p c^T)                              (B, N, C) -> (B, C, h, w) -> (B, C, H, W)

`shared_qk=True` uses one projection for queries and keys (`SharedQKAttention`), so the attention scores are the
symmetric q q^T: one parameter fewer per layer, as the course report's "transformer with shared Q-K".

Shapes: B batch, N = h * w patch tokens, D input width (`dim`), d decoder width (`hidden_dim`), C classes,
H heads, Dh head width, h x w grid, H x W output size.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from vlblocks._checks import check_dropout, check_int, check_positive_int, check_positive_number
from vlblocks.heads.segmentation import _SegHead
from vlblocks.layers.attention import Attention
from vlblocks.layers.mlp import Mlp

__all__ = ["MaskTransformerSegHead", "SharedQKAttention"]


class SharedQKAttention(Attention):
    """Self-attention whose keys use the query projection: k = q = x W_q (no `k` submodule).

    Same arguments as `Attention` (self-attention only: `dim_context` must be None or `dim`).
    """

    def __init__(self, dim: int, **kwargs: Any) -> None:
        if kwargs.get("dim_context") not in (None, dim):
            raise ValueError(
                f"dim_context must be None or dim={dim} (shared Q-K is self-attention), got "
                f"{kwargs['dim_context']!r}"
            )
        super().__init__(dim, **kwargs)
        del self.k  # keys come from self.q

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (the query projection) and values (B, H, N, Dh) of `context` (B, N, D)."""
        k = rearrange(self.q(context), "b n (h d) -> b h n d", h=self.heads)  # (B, H, N, Dh)
        v = rearrange(self.v(context), "b n (h d) -> b h n d", h=self.heads)  # (B, H, N, Dh)
        return k, v


class _Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN x), then x + Mlp(LN x)."""

    def __init__(
        self, dim: int, *, heads: int, dim_head: int | None, mlp_ratio: float, dropout: float, shared_qk: bool
    ) -> None:
        super().__init__()
        attention = SharedQKAttention if shared_qk else Attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention(dim, heads=heads, dim_head=dim_head, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskTransformerSegHead(_SegHead):
    """Segmenter's mask transformer: class embeddings attend jointly with patch tokens; masks from their products.

    Args:
        dim: input token width D (the sum of the widths for multi-layer features).
        num_classes: number of classes C (at least 2: the masks are normalised over classes).
        depth: number of transformer blocks.
        heads: attention heads H.
        dim_head: per-head width Dh; default `hidden_dim // heads`.
        hidden_dim: decoder width d; default D.
        shared_qk: one projection for queries and keys (`SharedQKAttention`).
        mlp_ratio: MLP hidden width as a ratio of d.
        dropout: dropout in attention and MLP.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        depth: int = 2,
        heads: int = 8,
        dim_head: int | None = None,
        hidden_dim: int | None = None,
        shared_qk: bool = False,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.depth = check_positive_int("depth", depth)
        heads = check_positive_int("heads", heads)
        width = dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        if dim_head is None and width % heads:
            raise ValueError(
                f"hidden_dim ({width}) must be divisible by heads ({heads}) when dim_head is None"
            )
        dim_head = width // heads if dim_head is None else check_positive_int("dim_head", dim_head)
        check_positive_number("mlp_ratio", mlp_ratio)
        check_dropout("dropout", dropout)
        if not isinstance(shared_qk, bool):
            raise TypeError(f"shared_qk must be a bool, got {type(shared_qk).__name__} {shared_qk!r}")
        self.hidden_dim, self.heads, self.dim_head, self.shared_qk = width, heads, dim_head, shared_qk

        self.proj_in = nn.Linear(dim, width)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, width))  # (1, C, d)
        self.blocks = nn.ModuleList(
            _Block(
                width,
                heads=heads,
                dim_head=dim_head,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                shared_qk=shared_qk,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.proj_patch = nn.Linear(width, width, bias=False)
        self.proj_classes = nn.Linear(width, width, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Segmenter's init: truncated normal (std 0.02) Linear weights and class embeddings, zero biases."""
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        scale = self.hidden_dim**-0.5  # the two output projections start as scaled Gaussians (Segmenter)
        for proj in (self.proj_patch, self.proj_classes):
            nn.init.normal_(proj.weight, std=scale)

    def _grid_logits(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        n = x.shape[1]
        z = torch.cat([self.proj_in(x), self.cls_emb.expand(x.shape[0], -1, -1)], dim=1)  # (B, N + C, d)
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)
        patches, classes = z[:, :n], z[:, n:]  # (B, N, d), (B, C, d)
        patches = nn.functional.normalize(self.proj_patch(patches), dim=-1)
        classes = nn.functional.normalize(self.proj_classes(classes), dim=-1)
        masks = torch.einsum("bnd,bcd->bnc", patches, classes)  # (B, N, C) cosine similarities
        masks = self.mask_norm(masks)
        return rearrange(masks, "b (h w) c -> b c h w", h=grid[0], w=grid[1])  # (B, C, h, w)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_classes={self.num_classes}, depth={self.depth}, hidden_dim={self.hidden_dim}, "
            f"heads={self.heads}, dim_head={self.dim_head}, shared_qk={self.shared_qk}"
        )
