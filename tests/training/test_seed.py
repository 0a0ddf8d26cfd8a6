"""seed_everything: same seed -> same draws from python, numpy and torch; validation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vlblocks.training import seed_everything


def draws() -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (2,)).tolist(),
    )


def test_same_seed_same_draws() -> None:
    assert seed_everything(123) == 123
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    second = draws()
    assert all(a != b for a, b in zip(first, second))


def test_seed_matches_manual_seeding() -> None:
    seed_everything(7)
    ours = draws()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert draws() == ours


def test_deterministic_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = torch.backends.cudnn.benchmark
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = cudnn_before


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True, None])
def test_invalid_seed(bad) -> None:
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(bad)
