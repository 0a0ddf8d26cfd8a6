"""AdamW over the trainable parameters, with weight decay only where it belongs.

Following common practice (BERT, timm's ``param_groups_weight_decay``, nanoGPT's ``configure_optimizers``), weight
decay applies to matrices and convolution kernels and not to 1-D parameters (biases, LayerNorm / BatchNorm
weights, LoRA-free scales) nor to position / class embeddings and other names listed in ``no_decay``. Frozen
parameters (``requires_grad=False``) are left out, so a frozen encoder costs the optimizer nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vlblocks._checks import check_finite_number, check_positive_number

__all__ = ["NO_DECAY_NAMES", "build_optimizer", "param_groups", "supports_fused_adamw"]

# parameter-name suffixes that never get weight decay, whatever their shape (timm's no_weight_decay lists)
NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "position_embeddings", "logit_scale")


def param_groups(
    model: nn.Module, *, weight_decay: float, no_decay: Iterable[str] = NO_DECAY_NAMES
) -> list[dict]:
    """Two AdamW groups over the trainable parameters: ``{"params": decayed, "weight_decay": weight_decay}`` and
    ``{"params": others, "weight_decay": 0.0}`` (empty groups dropped). Shared parameters appear once."""
    check_finite_number("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    skip = tuple(no_decay)
    decay, other = [], []
    for name, p in model.named_parameters():  # named_parameters() yields a shared parameter once
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(skip) or name.split(".")[-1] in skip:
            other.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": other, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    return groups


def supports_fused_adamw(params: Iterable[torch.Tensor]) -> bool:
    """True when ``AdamW(fused=True)`` runs on these parameters' devices with this torch (CUDA always; CPU from
    torch 2.4 on, for floating-point parameters)."""
    params = list(params)
    if not params or not all(p.is_floating_point() for p in params):
        return False
    devices = {p.device.type for p in params}
    if devices <= {"cuda"}:
        return True
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return devices <= {"cpu", "cuda"} and (major, minor) >= (2, 4)


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW on ``param_groups(model, weight_decay=...)``; ``fused=None`` picks the fused kernel where this torch
    supports it (one pass over all parameters: the fastest on CPU and GPU) and the foreach one elsewhere."""
    check_positive_number("lr", lr)
    groups = param_groups(model, weight_decay=weight_decay)
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = supports_fused_adamw(params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
