"""Learning-rate schedules: linear warm-up, then cosine, linear, step or no decay.

The schedule is a plain function of the optimizer step (``lr_factor``), so a resumed run recomputes it from the
step alone, and the same function is wrapped as a ``torch.optim.lr_scheduler.LambdaLR`` (``build_scheduler``) for
the usual ``scheduler.step()`` loop. Warm-up follows Goyal et al. 2017 (linear from ``1 / warmup_steps`` of the
base rate), cosine decay follows SGDR (Loshchilov & Hutter 2017) without restarts.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from vlblocks._checks import check_choice, check_int, check_nonneg_int, check_positive_int, check_probability
from vlblocks.training.optim import build_optimizer

__all__ = ["DECAYS", "build_scheduler", "lr_factor", "optimizer_for_run", "warmup_steps_for"]

DECAYS = ("cosine", "linear", "step", "none")


def warmup_steps_for(warmup: float | int, total_steps: int) -> int:
    """Warm-up length in steps: a float in [0, 1) is a fraction of `total_steps`, an int >= 1 is a step count."""
    if isinstance(warmup, float):
        check_probability("warmup", warmup, closed_high=False)
        return int(warmup * total_steps)
    return check_nonneg_int("warmup", warmup)


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    decay: str = "cosine",
    min_factor: float = 0.0,
    step_size: int | None = None,
    gamma: float = 0.1,
) -> float:
    """The multiplier of the base learning rate at optimizer step `step` (0-based).

    Steps ``0 .. warmup_steps - 1`` rise linearly to 1 (step s gives ``(s + 1) / warmup_steps``); after warm-up,
    progress ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` (clipped to [0, 1]) gives

    - ``"cosine"``: ``min_factor + (1 - min_factor) * (1 + cos(pi p)) / 2``
    - ``"linear"``: ``min_factor + (1 - min_factor) * (1 - p)``
    - ``"step"``:   ``gamma ** ((step - warmup_steps) // step_size)``
    - ``"none"``:   1
    """
    check_int("step", step, low=0)
    total_steps = check_positive_int("total_steps", total_steps)
    warmup_steps = check_nonneg_int("warmup_steps", warmup_steps)
    check_choice("decay", decay, DECAYS)
    check_probability("min_factor", min_factor)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    after = step - warmup_steps
    if decay == "none":
        return 1.0
    if decay == "step":
        size = check_positive_int("step_size", step_size)
        return float(gamma) ** (after // size)
    progress = min(1.0, after / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_factor + (1.0 - min_factor) * shape


def _factor_from(offset: int, kwargs: dict, step: int) -> float:
    return lr_factor(step + offset, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    decay: str = "cosine",
    min_factor: float = 0.0,
    step_size: int | None = None,
    gamma: float = 0.1,
    offset: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` following ``lr_factor``; ``offset`` starts it at a later step (a new optimizer mid-run).

    The arguments are checked here, once, so a typo fails before training starts.
    """
    kwargs = dict(
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay=decay,
        min_factor=min_factor,
        step_size=step_size,
        gamma=gamma,
    )
    lr_factor(0, **kwargs)  # validate now
    if decay == "step":
        check_positive_int("step_size", step_size)
    check_nonneg_int("offset", offset)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_factor_from, offset, kwargs))


def optimizer_for_run(
    model: torch.nn.Module, args: Any, total_steps: int, *, lr: float | None = None
) -> dict:
    """``{"optimizer", "scheduler"}`` from a recipe's run flags, ready for ``TrainingRun.track(**...)``: AdamW over
    the trainable parameters (`build_optimizer`, no decay on 1-D parameters) at ``lr`` (default ``args.lr``) with
    ``args.weight_decay``, warm-up ``args.warmup`` (a fraction of the steps or a count), then ``args.lr_decay``
    (cosine where the recipe has no such flag) over `total_steps`."""
    optimizer = build_optimizer(model, lr=args.lr if lr is None else lr, weight_decay=args.weight_decay)
    warmup = warmup_steps_for(args.warmup, total_steps)
    decay = getattr(args, "lr_decay", "cosine")
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_steps=warmup, decay=decay)
    return {"optimizer": optimizer, "scheduler": scheduler}
