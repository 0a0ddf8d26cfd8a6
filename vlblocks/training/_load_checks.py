"""Checks ``load_checkpoint`` runs before it changes anything: the model's keys and shapes (tied weights allowed to
be stored once), the optimizer's parameter groups and per-parameter state shapes, the scheduler's kind, the RNG
states (tried on fresh generators). Each raises a ``ValueError`` naming the checkpoint and what does not fit.

No tensors are computed here; shapes are those of the model's state dict and of the safetensors headers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["check_model", "check_optimizer", "check_rng", "check_scheduler"]

# optimizer state entries that have their parameter's shape (torch.optim's Adam(W), SGD, RMSprop, Adagrad, ...)
_PARAM_SHAPED = frozenset(
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg", "acc_delta", "sum",
     "ax", "prev", "exp_inf", "step_size"}
)  # fmt: skip


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """For every key, the other keys that are the same tensor (tied weights; the file stores one of them)."""
    groups: dict[tuple, set[str]] = {}
    for key, t in state.items():
        if t.numel() and t.device.type != "meta":
            ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
            groups.setdefault(ident, set()).add(key)
    return {key: group - {key} for group in groups.values() for key in group}


def check_model(model: nn.Module, header: dict, strict: bool, path: Path) -> None:
    own = model.state_dict()
    aliases = _aliases(own)
    shapes = {k: shape for k, (_, shape) in header.items()}
    wrong = [
        f"{k}: model {tuple(own[k].shape)}, file {shapes[k]}"
        for k in shapes
        if k in own and tuple(own[k].shape) != shapes[k]
    ]
    if wrong:
        raise ValueError(f"checkpoint {str(path)!r} does not fit the model: shape mismatch {wrong[:8]}")
    missing = [k for k in own if k not in shapes and not aliases.get(k, set()) & shapes.keys()]
    unexpected = sorted(shapes.keys() - own.keys())
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__} (strict=True): missing keys "
            f"{missing[:8]} (of {len(missing)}), unexpected keys {unexpected[:8]} (of {len(unexpected)})"
        )


def check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, path: Path) -> None:
    name = type(optimizer).__name__
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict):
        raise ValueError(f"checkpoint {str(path)!r} has a malformed optimizer state")
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(
            f"checkpoint {str(path)!r}: the optimizer has {len(optimizer.param_groups)} param groups, "
            f"the checkpoint {len(groups)}"
        )
    params: dict[Any, torch.Tensor] = {}
    for i, (own, theirs) in enumerate(zip(optimizer.param_groups, groups)):
        ids = theirs.get("params") if isinstance(theirs, dict) else None
        if not isinstance(ids, list) or len(ids) != len(own["params"]):
            count = len(ids) if isinstance(ids, list) else ids
            raise ValueError(
                f"checkpoint {str(path)!r}: {name} param group {i} has {len(own['params'])} parameters, "
                f"the checkpoint {count}"
            )
        params.update(zip(ids, own["params"]))
    for index, entry in saved["state"].items():
        if index not in params or not isinstance(entry, dict):
            raise ValueError(f"checkpoint {str(path)!r}: optimizer state for unknown parameter {index!r}")
        for key, value in entry.items():
            shape = tuple(params[index].shape)
            if key in _PARAM_SHAPED and isinstance(value, torch.Tensor) and tuple(value.shape) != shape:
                raise ValueError(
                    f"checkpoint {str(path)!r}: optimizer state {key!r} of parameter {index} has shape "
                    f"{tuple(value.shape)}, the parameter {shape}"
                )


def check_scheduler(scheduler: Any, saved: Any, path: Path) -> None:
    own = scheduler.state_dict()
    if not isinstance(saved, dict) or saved.keys() != own.keys():
        theirs = sorted(saved) if isinstance(saved, dict) else saved
        raise ValueError(
            f"checkpoint {str(path)!r}: the scheduler state has keys {theirs}, "
            f"{type(scheduler).__name__} has {sorted(own)} (a different kind of scheduler?)"
        )


def check_rng(json_state: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Raise unless the saved RNG states can be restored (tried on fresh generators, the global ones untouched)."""
    try:
        version, internal, gauss = json_state["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = json_state["numpy"]
        np.random.RandomState().set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.Generator().set_state(tensors["torch_cpu"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"checkpoint {str(path)!r} has a malformed RNG state ({type(e).__name__}: {e})"
        ) from None
