"""Small general utilities on modules: parameter counting, trainability, and detecting HF GPT-2's `Conv1D`.

`is_hf_conv1d` never imports transformers: an object can only be a `transformers` `Conv1D` if the module that
defines the class is already imported, so it looks the class up in `sys.modules`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import NamedTuple

from torch import nn

__all__ = ["ParameterCount", "count_parameters", "hf_conv1d_class", "is_hf_conv1d", "set_trainable"]

_CONV1D_MODULE = "transformers.pytorch_utils"


class ParameterCount(NamedTuple):
    """Trainable and total parameter counts (tied parameters counted once) and `100 * trainable / total`."""

    trainable: int
    total: int
    percent: float


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters of `model` (each shared tensor counted once)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    trainable = total = 0
    for param in model.parameters():  # parameters() yields each tensor once
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return ParameterCount(trainable, total, 100.0 * trainable / total if total else 0.0)


def set_trainable(module: nn.Module, trainable: bool, *, skip: Collection[str] = ()) -> None:
    """Set `requires_grad` of every parameter of `module` to `trainable`, except the names in `skip` (frozen)."""
    for name, param in module.named_parameters():
        param.requires_grad_(bool(trainable) and name not in skip)


def hf_conv1d_class() -> type | None:
    """transformers' GPT-2 `Conv1D` class if transformers has loaded it, else None (nothing is imported)."""
    module = sys.modules.get(_CONV1D_MODULE)
    return getattr(module, "Conv1D", None) if module is not None else None


def is_hf_conv1d(module: object) -> bool:
    """True for an instance of HF GPT-2's `Conv1D` (weight (in, out)) or a subclass, such as `LoRAConv1D`."""
    cls = hf_conv1d_class()
    return cls is not None and isinstance(module, cls)
