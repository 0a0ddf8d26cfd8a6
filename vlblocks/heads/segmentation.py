"""Segmentation heads on patch tokens: a per-patch linear classifier and a convolution on the patch grid.

Both map the patch tokens of a ViT-style encoder (prefix tokens removed) to class logits on the patch grid and
upsample them bilinearly to the requested image size: the linear decoder of Segmenter (Strudel et al. 2021,
"Segmenter: Transformer for Semantic Segmentation") and of DINOv2's linear probes (Oquab et al. 2023), and a
small convolutional decoder in the spirit of SETR's naive head (Zheng et al. 2021). The mask-transformer head
(Segmenter's) is in `vlblocks.heads.mask_transformer`; every head shares the call
`head(tokens, grid=(h, w), size=(H, W)) -> logits (B, C, H, W)`.

Multi-layer features: `tokens` may be a list of (B, N, D_i) tensors, e.g. the last k layers' patch tokens; they
are concatenated along the width, so the head's `dim` is the sum of the D_i.

Shapes: B batch, N = h * w patch tokens, D width (`dim`), h x w patch grid, H x W output size, C classes, F hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlblocks._checks import check_positive_int, check_tensor, is_int

__all__ = ["ConvSegHead", "LinearSegHead", "join_tokens"]

_Tokens = torch.Tensor | Sequence[torch.Tensor]


def join_tokens(tokens: _Tokens) -> torch.Tensor:
    """One (B, N, sum D_i) tensor from a tensor (B, N, D) or a list of them (concatenated along the width)."""
    if isinstance(tokens, torch.Tensor):
        return tokens
    if not isinstance(tokens, (list, tuple)) or len(tokens) == 0:
        raise TypeError(f"tokens must be a tensor (B, N, D) or a non-empty list of them, got {tokens!r:.80}")
    parts = [check_tensor(f"tokens[{i}]", t, ndim=3, shape="(B, N, D)") for i, t in enumerate(tokens)]
    first = parts[0].shape[:2]
    for i, t in enumerate(parts):
        if t.shape[:2] != first:
            raise ValueError(
                f"tokens[{i}] must have the batch and token count of tokens[0] {tuple(first)}, got {tuple(t.shape)}"
            )
    return torch.cat(parts, dim=-1)  # (B, N, sum D_i)


def _check_pair(name: str, value: object) -> tuple[int, int]:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) and int(v) > 0 for v in value)
    if not ok:
        raise ValueError(f"{name} must be a pair of positive ints (height, width), got {value!r}")
    return int(value[0]), int(value[1])  # type: ignore[index]


class _SegHead(nn.Module):
    """Shared call of the segmentation heads: checks, `_grid_logits` on the grid, bilinear upsampling."""

    dim: int
    num_classes: int

    def forward(
        self, tokens: _Tokens, *, grid: tuple[int, int], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Class logits for every pixel.

        Args:
            tokens: patch tokens (B, N, D) in row-major grid order, prefix tokens removed; or a list of
                (B, N, D_i) tensors (multi-layer features) whose widths sum to D.
            grid: the patch grid (h, w), h * w = N.
            size: output size (H, W); None gives the logits on the grid (B, C, h, w).

        Returns:
            logits (B, C, H, W), bilinearly upsampled from the grid.
        """
        x = join_tokens(tokens)
        h, w = _check_pair("grid", grid)
        out_size = (h, w) if size is None else _check_pair("size", size)
        check_tensor("tokens", x, ndim=3, dtype="float", shape=f"(B, N, {self.dim})")
        if x.shape[-1] != self.dim:
            raise ValueError(f"tokens must have width {self.dim} (B, N, {self.dim}), got {tuple(x.shape)}")
        if x.shape[1] != h * w:
            raise ValueError(
                f"tokens must hold h * w = {h * w} patch tokens for grid=({h}, {w}) (prefix tokens removed), "
                f"got {x.shape[1]}"
            )
        logits = self._grid_logits(x, (h, w))  # (B, C, h, w)
        if out_size != (h, w):
            logits = F.interpolate(
                logits, size=out_size, mode="bilinear", align_corners=False
            )  # (B, C, H, W)
        return logits

    def _grid_logits(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError


class LinearSegHead(_SegHead):
    """Per-patch linear classifier: logits_patch = W x_patch + b, then bilinear upsampling.

    Args:
        dim: token width D (the sum of the widths for multi-layer features).
        num_classes: number of classes C.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.classifier = nn.Linear(dim, num_classes)

    def _grid_logits(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier(x)  # (B, N, C)
        return rearrange(logits, "b (h w) c -> b c h w", h=grid[0], w=grid[1])  # (B, C, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}"


class ConvSegHead(_SegHead):
    """Convolution on the patch grid, with padding that keeps the grid, then bilinear upsampling.

    `hidden_dim=None`: one Conv2d(D, C, k). Otherwise Conv2d(D, F, k) -> BatchNorm2d -> ReLU -> Conv2d(F, C, 1).

    Args:
        dim: token width D.
        num_classes: number of classes C.
        kernel_size: odd kernel side k (padding k // 2 keeps the h x w grid).
        hidden_dim: hidden channels F, or None for a single convolution.
    """

    def __init__(
        self, dim: int, num_classes: int, *, kernel_size: int = 3, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding that keeps the grid), got {kernel_size}")
        self.hidden_dim = None if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        pad = kernel_size // 2
        if self.hidden_dim is None:
            self.net = nn.Conv2d(dim, num_classes, kernel_size, padding=pad)
        else:
            self.net = nn.Sequential(
                nn.Conv2d(dim, self.hidden_dim, kernel_size, padding=pad, bias=False),
                nn.BatchNorm2d(self.hidden_dim),
                nn.ReLU(),
                nn.Conv2d(self.hidden_dim, num_classes, 1),
            )

    def _grid_logits(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        fmap = rearrange(x, "b (h w) d -> b d h w", h=grid[0], w=grid[1])  # (B, D, h, w)
        return self.net(fmap)  # (B, C, h, w)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_classes={self.num_classes}, kernel_size={self.kernel_size}, "
            f"hidden_dim={self.hidden_dim}"
        )
