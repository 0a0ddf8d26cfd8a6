"""Test configuration: offline, seeded, small thread count (the suite runs on 2 CPU cores)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REFDATA = Path(__file__).resolve().parents[2] / "shared" / "refdata"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors run fastest on one thread; two OpenMP threads on a busy 2-core machine spin for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def refdata() -> Path:
    """The shared reference data folder; tests that need it skip when a checkout does not have it."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data not found at {REFDATA} (only present in the development workspace)")
    return REFDATA
