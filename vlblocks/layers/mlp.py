"""The transformer feed-forward block: Linear -> activation -> dropout -> Linear -> dropout.

Follows the ViT / GPT-2 MLP (Dosovitskiy et al. 2021; Radford et al. 2019) with timm's names (`fc1`, `act`, `fc2`).

Shapes: B batch, N tokens, D width (`dim`), F hidden width (`hidden_dim`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int, check_positive_number, check_tensor
from vlblocks.constants import ACTIVATIONS

__all__ = ["Mlp", "make_activation"]


def make_activation(act: str | type[nn.Module] | nn.Module) -> nn.Module:
    """Build an activation from a name (`"gelu"`, `"relu"`, ...), an `nn.Module` class or an instance."""
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)} or an nn.Module, got {act!r}")
        return ACTIVATIONS[act]()
    raise TypeError(f"act must be a str, an nn.Module class or instance, got {type(act).__name__}")


class Mlp(nn.Module):
    """Two-layer feed-forward block.

    Args:
        dim: input width D.
        hidden_dim: hidden width F; defaults to `int(dim * mlp_ratio)`.
        mlp_ratio: used when `hidden_dim` is None.
        out_dim: output width; defaults to `dim` (also the read-only property `out_dim`).
        act: activation name, class or instance.
        dropout: dropout after the activation and after `fc2`.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        out_dim: int | None = None,
        act: str | type[nn.Module] | nn.Module = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        if hidden_dim is None:
            hidden_dim = int(dim * check_positive_number("mlp_ratio", mlp_ratio))
            if hidden_dim <= 0:
                raise ValueError(f"mlp_ratio must give a hidden width >= 1, got dim * mlp_ratio = {dim * mlp_ratio}")
        check_positive_int("hidden_dim", hidden_dim)
        if out_dim is not None:
            check_positive_int("out_dim", out_dim)
        dropout = check_dropout("dropout", dropout)
        self.dim, self.hidden_dim = dim, hidden_dim
        self._out_dim = dim if out_dim is None else out_dim
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, self._out_dim, bias=bias)
        self.drop2 = nn.Dropout(dropout)

    @property
    def out_dim(self) -> int:
        """Output width."""
        return self._out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., out_dim)."""
        check_tensor("x", x, dtype="float", nonempty=False)
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
