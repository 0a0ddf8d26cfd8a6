"""The transformer feed-forward block: Linear -> activation -> dropout -> Linear -> dropout.

Follows the ViT / GPT-2 MLP (Dosovitskiy et al. 2021; Radford et al. 2019) with timm's names (`fc1`, `act`, `fc2`).

Shapes: B batch, N tokens, D width (`dim`), F hidden width (`hidden_dim`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Mlp", "make_activation"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}


def make_activation(act: str | type[nn.Module] | nn.Module) -> nn.Module:
    """Build an activation from a name (`"gelu"`, `"relu"`, ...), an `nn.Module` class or an instance."""
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    if isinstance(act, str):
        if act not in _ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)} or an nn.Module, got {act!r}")
        return _ACTIVATIONS[act]()
    raise TypeError(f"act must be a str, an nn.Module class or instance, got {type(act).__name__}")


class Mlp(nn.Module):
    """Two-layer feed-forward block.

    Args:
        dim: input width D.
        hidden_dim: hidden width F; defaults to `int(dim * mlp_ratio)`.
        mlp_ratio: used when `hidden_dim` is None.
        dim_out: output width; defaults to `dim`.
        act: activation name, class or instance.
        dropout: dropout after the activation and after `fc2`.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dim_out: int | None = None,
        act: str | type[nn.Module] | nn.Module = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if hidden_dim is None:
            if mlp_ratio <= 0:
                raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
            hidden_dim = int(dim * mlp_ratio)
        if hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be a positive int, got {hidden_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim_out or dim, bias=bias)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., dim_out)."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
