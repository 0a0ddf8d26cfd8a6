"""The shared argument checks: accepted values come back converted, mistakes name the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlblocks import _checks as C


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_int_accepts(value):
    assert C.check_positive_int("heads", value) == int(value)


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "2", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"heads must be a positive int, got"):
        C.check_positive_int("heads", value)


def test_int_bounds_and_type():
    assert C.check_int("k", 3, low=0, high=3) == 3
    with pytest.raises(ValueError, match=r"k must be an int in \[0, 2\], got 3"):
        C.check_int("k", 3, low=0, high=2)
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 0"):
        C.check_int("k", 0, low=1)
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        C.check_int("k", False)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, "1"])
def test_numbers_refuse_nonfinite_and_bools(value):
    with pytest.raises(ValueError, match="alpha must be a finite"):
        C.check_positive_number("alpha", value)
    with pytest.raises(ValueError, match="x must be a finite number"):
        C.check_finite_number("x", value)


def test_dropout_and_probability_ends():
    assert C.check_dropout("dropout", 0.0) == 0.0
    for bad in (1.0, -0.1, math.nan, True):
        with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got"):
            C.check_dropout("dropout", bad)
    assert C.check_probability("top_p", 1.0, closed_low=False) == 1.0
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        C.check_probability("top_p", 0.0, closed_low=False)


def test_choice():
    assert C.check_choice("pool", "max", ("max", "mean")) == "max"
    with pytest.raises(ValueError, match=r"pool must be one of \['max', 'mean'\], got 'sum'"):
        C.check_choice("pool", "sum", ("max", "mean"))


def test_tensor_checks():
    x = torch.zeros(2, 3)
    assert C.check_tensor("x", x, ndim=2, dtype="float") is x
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        C.check_tensor("x", [1, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, D\), got \(2, 3\)"):
        C.check_tensor("x", x, ndim=3, shape="(B, N, D)")
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        C.check_tensor("ids", x, dtype="int")
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        C.check_tensor("mask", x.long(), dtype="bool")
    with pytest.raises(ValueError, match="x must hold at least one item"):
        C.check_tensor("x", torch.zeros(0, 3))
    assert C.check_tensor("x", torch.zeros(0, 3), nonempty=False).shape == (0, 3)


def test_check_index_shape_range_and_type() -> None:

    index = torch.tensor([0, 2, 1])
    assert C.check_index("i", index, size=3, what="one of 3") is index
    C.check_index(
        "i", torch.tensor([], dtype=torch.long), size=0, what="none"
    )  # empty: nothing to range-check
    with pytest.raises(ValueError, match=r"i must have shape \(4,\) \(one per text\), got \(3,\)"):
        C.check_index("i", index, size=3, what="one of 3", length=4, per="text")
    with pytest.raises(ValueError, match=r"i must lie in \[0, 2\) \(one of 2\), got 2"):
        C.check_index("i", index, size=2, what="one of 2")
    with pytest.raises(ValueError, match=r"i must lie in \[0, 3\) \(one of 3\), got -1"):
        C.check_index("i", torch.tensor([0, -1]), size=3, what="one of 3")
    with pytest.raises(TypeError, match="i must be an integer tensor"):
        C.check_index("i", index.float(), size=3, what="one of 3")
