"""Seeding: one call that seeds Python's ``random``, numpy, torch (CPU) and every CUDA device.

Follows the reproducibility notes of PyTorch (https://pytorch.org/docs/stable/notes/randomness.html): with
``deterministic=True`` it also asks torch for deterministic algorithms (``warn_only`` so unsupported ops warn
instead of failing), turns off cuDNN benchmarking and sets ``CUBLAS_WORKSPACE_CONFIG`` for deterministic cuBLAS.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything"]

_MAX_SEED = 2**32 - 1  # numpy's legacy global seed range


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed python ``random``, numpy's global generator, torch's CPU generator and all CUDA generators.

    Args:
        seed: an int in [0, 2**32 - 1].
        deterministic: also select deterministic torch algorithms (slower; some CUDA ops only warn).

    Returns:
        The seed, for logging.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, {_MAX_SEED}], got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
