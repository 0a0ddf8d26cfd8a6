"""Mlp: shapes, gradients, the definition, and argument errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlblocks.layers import Mlp
from vlblocks.layers.mlp import make_activation


def test_mlp_is_fc2_act_fc1() -> None:
    mlp = Mlp(8, mlp_ratio=2.0, act="relu")
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
    assert mlp.fc1.out_features == 16


def test_mlp_out_dim_and_gradients() -> None:
    mlp = Mlp(8, hidden_dim=12, out_dim=4, dropout=0.1)
    out = mlp(torch.randn(2, 8))
    assert out.shape == (2, 4) and mlp.out_dim == 4 and Mlp(8).out_dim == 8
    out.sum().backward()
    assert all(p.grad is not None for p in mlp.parameters())


def test_activation_forms() -> None:
    assert isinstance(make_activation("gelu"), nn.GELU)
    assert isinstance(make_activation(nn.SiLU), nn.SiLU)
    act = nn.Tanh()
    assert make_activation(act) is act


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"act": "swishy"}, ValueError, "act must be one of"),
        ({"act": 3}, TypeError, "act must be a str"),
        ({"mlp_ratio": 0}, ValueError, "mlp_ratio must be a finite positive number, got 0"),
        ({"dropout": -0.1}, ValueError, r"dropout must be a number in \[0, 1\), got -0.1"),
        # regression (issue 7 item 10): out_dim=0 / hidden_dim=0 used to fall back to the defaults
        ({"out_dim": 0}, ValueError, "out_dim must be a positive int, got 0"),
        ({"hidden_dim": 0}, ValueError, "hidden_dim must be a positive int, got 0"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Mlp(8, **kwargs)


def test_out_dim_is_read_only() -> None:
    with pytest.raises(AttributeError):
        Mlp(8).out_dim = 3  # type: ignore[misc]
