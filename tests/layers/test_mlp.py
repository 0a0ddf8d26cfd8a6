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


def test_mlp_dim_out_and_gradients() -> None:
    mlp = Mlp(8, hidden_dim=12, dim_out=4, dropout=0.1)
    out = mlp(torch.randn(2, 8))
    assert out.shape == (2, 4)
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
        ({"mlp_ratio": 0}, ValueError, "mlp_ratio must be > 0"),
        ({"dropout": -0.1}, ValueError, "dropout must be in"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Mlp(8, **kwargs)
