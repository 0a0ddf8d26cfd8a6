"""Classifier head: a (LayerNorm +) MLP or a single Linear from a pooled vector to class logits.

The answer classifier of VQA models, which treat VQA as classification over the frequent answers (Antol et al.
2015; Anderson et al. 2018, bottom-up top-down; LXMERT, Tan & Bansal 2019, uses Linear -> GELU -> LayerNorm ->
Linear). Here: optional input LayerNorm, then Linear(D, F) -> act -> dropout -> Linear(F, C), or one
Linear(D, C) when `hidden_dim` is None.

Shapes: B batch, D input width (`dim`), F hidden width (`hidden_dim`), C classes (`num_classes`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int, check_tensor
from vlblocks.layers.mlp import make_activation

__all__ = ["MLPHead"]


class MLPHead(nn.Module):
    """Pooled features to class logits.

    Args:
        dim: input width D.
        num_classes: number of classes C.
        hidden_dim: hidden width F; None gives a single Linear(D, C).
        dropout: dropout before the last Linear (on the input when `hidden_dim` is None).
        act: activation name (see `vlblocks.layers.mlp.make_activation`), class or instance.
        norm: LayerNorm on the input.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        act: str | type[nn.Module] | nn.Module = "gelu",
        norm: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_classes", num_classes)
        if hidden_dim is not None:
            check_positive_int("hidden_dim", hidden_dim)
        check_dropout("dropout", dropout)
        self.dim, self.num_classes, self.hidden_dim = dim, num_classes, hidden_dim
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        if hidden_dim is not None:
            self.fc1 = nn.Linear(dim, hidden_dim)
            self.act = make_activation(act)
        else:
            self.fc1, self.act = nn.Identity(), nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim if hidden_dim is None else hidden_dim, num_classes)

    @property
    def out_dim(self) -> int:
        """Output width (= `num_classes`)."""
        return self.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> logits (B, C)."""
        check_tensor("x", x, dtype="float", nonempty=False)
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, hidden_dim={self.hidden_dim}"
