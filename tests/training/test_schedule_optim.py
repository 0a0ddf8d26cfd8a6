"""Schedules (golden values of the formulas) and AdamW parameter groups (what decays, what trains)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from torch import nn

from vlblocks.training import (
    build_optimizer,
    build_scheduler,
    lr_factor,
    optimizer_for_run,
    param_groups,
    warmup_steps_for,
)


def test_warmup_then_cosine_golden_values() -> None:
    f = [lr_factor(s, total_steps=10, warmup_steps=2) for s in range(11)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)  # first step after warm-up: progress 0
    assert f[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert f[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[1:], f[2:])), "cosine must not increase after warm-up"


def test_linear_step_none_and_min_factor() -> None:
    assert lr_factor(5, total_steps=10, decay="linear") == pytest.approx(0.5)
    assert lr_factor(5, total_steps=10, decay="linear", min_factor=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    steps = [
        lr_factor(s, total_steps=100, warmup_steps=1, decay="step", step_size=3, gamma=0.5)
        for s in (1, 3, 4, 7)
    ]
    assert steps == [1.0, 1.0, 0.5, 0.25]
    assert lr_factor(50, total_steps=100, decay="none") == 1.0
    assert lr_factor(500, total_steps=100) == pytest.approx(0.0, abs=1e-12)  # past the end: clipped


def test_scheduler_follows_the_function_and_offset() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(opt, total_steps=8, warmup_steps=2, decay="cosine")
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_factor(s, total_steps=8, warmup_steps=2) for s in range(8)])
    opt2 = torch.optim.SGD([p], lr=0.1)
    build_scheduler(opt2, total_steps=8, warmup_steps=2, offset=5)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(5, total_steps=8, warmup_steps=2))


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="total_steps must be a positive int, got 0"):
        lr_factor(0, total_steps=0)
    with pytest.raises(
        ValueError, match=r"decay must be one of \['cosine', 'linear', 'step', 'none'\], got 'cos'"
    ):
        lr_factor(0, total_steps=5, decay="cos")
    with pytest.raises(ValueError, match="step_size must be a positive int, got None"):
        build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1), total_steps=5, decay="step")
    with pytest.raises(ValueError, match=r"warmup must be a number in \[0, 1\)"):
        warmup_steps_for(1.5, 100)
    assert warmup_steps_for(0.05, 100) == 5 and warmup_steps_for(7, 100) == 7


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.conv = nn.Conv2d(3, 8, 3)


def test_param_groups_decay_only_matrices_and_skip_frozen() -> None:
    model = Tiny()
    groups = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in groups[0]["params"])
    plain = sorted(names[id(p)] for p in groups[1]["params"])
    assert decayed == ["conv.weight", "proj.weight"] and groups[0]["weight_decay"] == 0.05
    assert plain == ["conv.bias", "norm.bias", "norm.weight", "pos_embed", "proj.bias"]
    assert groups[1]["weight_decay"] == 0.0
    assert not any("frozen" in n for n in decayed + plain)


def test_weight_decay_really_skips_norms() -> None:
    """Control: one AdamW step with zero gradients moves only the decayed weights."""
    model = Tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    nn.init.ones_(model.norm.weight)
    before["norm.weight"] = model.norm.weight.detach().clone()
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"proj.weight", "conv.weight"}


def test_optimizer_errors() -> None:
    model = Tiny()
    with pytest.raises(ValueError, match="lr must be a finite positive number, got -0.001"):
        build_optimizer(model, lr=-1e-3)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        param_groups(model, weight_decay=-1.0)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, lr=1e-3)


def test_optimizer_for_run_reads_the_run_flags() -> None:
    """The recipes' one call: AdamW at --lr (or the lr given) with --weight-decay on matrices only, warm-up --warmup,
    then --lr-decay (cosine for a recipe without that flag), the same rates as building the two by hand."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    args = argparse.Namespace(lr=0.1, weight_decay=0.05, warmup=0.25, lr_decay="linear")
    built = optimizer_for_run(model, args, 8)
    assert set(built) == {"optimizer", "scheduler"}
    decays = sorted(g["weight_decay"] for g in built["optimizer"].param_groups)
    assert decays == [0.0, 0.05]
    rates = []
    for _ in range(8):
        rates.append(built["optimizer"].param_groups[0]["lr"])
        built["optimizer"].step()
        built["scheduler"].step()
    assert rates == pytest.approx(
        [0.1 * lr_factor(s, total_steps=8, warmup_steps=2, decay="linear") for s in range(8)]
    )
    cosine = optimizer_for_run(model, argparse.Namespace(lr=0.1, weight_decay=0.0, warmup=0), 8, lr=2.0)
    assert cosine["optimizer"].param_groups[0]["lr"] == 2.0  # the lr given wins over --lr
    for _ in range(4):
        cosine["optimizer"].step()
        cosine["scheduler"].step()
    assert cosine["optimizer"].param_groups[0]["lr"] == pytest.approx(
        2.0 * lr_factor(4, total_steps=8, decay="cosine")
    )
