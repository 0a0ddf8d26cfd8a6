"""Tests of MLPHead: shapes, single-Linear form, golden values, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlblocks.heads import MLPHead


@pytest.mark.parametrize("hidden_dim", [None, 48])
@pytest.mark.parametrize("norm", [True, False])
def test_shapes_and_gradients(hidden_dim: int | None, norm: bool) -> None:
    head = MLPHead(32, 7, hidden_dim=hidden_dim, dropout=0.1, norm=norm)
    assert head.out_dim == 7
    x = torch.randn(4, 32)
    logits = head(x)
    assert logits.shape == (4, 7) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_single_linear_when_no_hidden() -> None:
    head = MLPHead(32, 7, norm=False)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (7, 32)
    x = torch.randn(4, 32)
    torch.testing.assert_close(head(x), x @ head.fc2.weight.T + head.fc2.bias)


@pytest.mark.parametrize("act,fn", [("gelu", F.gelu), ("relu", F.relu)])
def test_mlp_matches_definition(act: str, fn) -> None:
    head = MLPHead(32, 5, hidden_dim=16, act=act, dropout=0.3).eval()
    with torch.no_grad():
        head.norm.weight.normal_()
        head.norm.bias.normal_()
    x = torch.randn(4, 32)
    z = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    z = z * head.norm.weight + head.norm.bias
    want = fn(z @ head.fc1.weight.T + head.fc1.bias) @ head.fc2.weight.T + head.fc2.bias
    torch.testing.assert_close(head(x), want, atol=1e-5, rtol=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="dim must be a positive int, got 0"):
        MLPHead(0, 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got -2"):
        MLPHead(8, -2)
    with pytest.raises(ValueError, match="hidden_dim must be a positive int, got -1"):
        MLPHead(8, 3, hidden_dim=-1)
    with pytest.raises(ValueError, match="hidden_dim must be a positive int, got 0"):
        MLPHead(8, 3, hidden_dim=0)  # 0 no longer silently means "no hidden layer": None does
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1.0"):
        MLPHead(8, 3, dropout=1.0)
    with pytest.raises(ValueError, match="act must be one of"):
        MLPHead(8, 3, hidden_dim=4, act="swishy")
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden'"):
        MLPHead(8, 3, hidden=4)  # the old name is gone (one name per concept)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8\), got \(2, 9\)"):
        MLPHead(8, 3)(torch.randn(2, 9))
