"""Classifier head: a (LayerNorm +) MLP or a single Linear from a pooled vector to class logits.

The answer classifier of VQA models, which treat VQA as classification over the frequent answers (Antol et al.
2015; Anderson et al. 2018, bottom-up top-down; LXMERT, Tan & Bansal 2019, uses Linear -> GELU -> LayerNorm ->
Linear). Here: optional input LayerNorm, then Linear(D, F) -> act -> dropout -> Linear(F, C), or one
Linear(D, C) when `hidden` is None or 0.

Shapes: B batch, D input width (`dim`), F hidden width (`hidden`), C classes (`num_classes`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlblocks.layers.mlp import make_activation

__all__ = ["MLPHead"]


class MLPHead(nn.Module):
    """Pooled features to class logits.

    Args:
        dim: input width D.
        num_classes: number of classes C.
        hidden: hidden width F; None or 0 gives a single Linear(D, C).
        dropout: dropout before the last Linear (on the input when `hidden` is None/0).
        act: activation name (see `vlblocks.layers.mlp.make_activation`), class or instance.
        norm: LayerNorm on the input.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        hidden: int | None = None,
        dropout: float = 0.0,
        act: str | type[nn.Module] | nn.Module = "gelu",
        norm: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0):
            raise ValueError(f"hidden must be None or a non-negative int, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.num_classes, self.hidden = dim, num_classes, hidden or 0
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        if self.hidden:
            self.fc1 = nn.Linear(dim, self.hidden)
            self.act = make_activation(act)
        else:
            self.fc1, self.act = nn.Identity(), nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(self.hidden or dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> logits (B, C)."""
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, hidden={self.hidden}"
