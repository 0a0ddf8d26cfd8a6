"""save_adapter survives a crash at every filesystem step (issue 7, item 3).

Version v of the adapter has every LoRA weight equal to v and ``lora_alpha = v`` in its config, so a config of one
save loaded with the weights of another is visible. After a crash at step k, ``load_adapter`` gives one complete
version (the old or the new one), the config is never truncated, and the next save leaves no temporary file.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import vlblocks.peft.io as peft_io
from vlblocks import _files
from vlblocks.peft import apply_lora, load_adapter, lora_layers, save_adapter

WRITERS = [(peft_io, "save_file"), (_files, "write_json")]


@pytest.fixture(autouse=True)
def _no_fsync_wait(monkeypatch) -> None:
    """fsync stays a (counted, crashable) step but does not wait for the disk."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def base() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def save(folder: Path, v: int) -> None:
    model = base()
    apply_lora(model, ["0", "2"], r=2, alpha=v)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_A.fill_(v)
            layer.lora_B.fill_(v)
    save_adapter(model, folder)


def loaded_version(folder: Path) -> int | None:
    model = base()
    try:
        load_adapter(model, folder)
    except FileNotFoundError:
        return None
    layers = [layer for _, layer in lora_layers(model)]
    v = layers[0].lora_alpha
    for layer in layers:
        assert layer.lora_alpha == v and torch.all(layer.lora_A == v) and torch.all(layer.lora_B == v), v
    return v


def related(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.parent.iterdir()
        if p.name == folder.name or p.name.startswith(f".{folder.name}.")
    )


def test_save_adapter_steps_and_layout(tmp_path, crash_plan) -> None:
    plan = crash_plan(WRITERS)
    crashed, first = plan.run(partial(save, tmp_path / "a", 1))
    crashed2, over = plan.run(partial(save, tmp_path / "a", 2))
    assert not crashed and not crashed2
    for name in ("mkdir", "save_file", "write_json", "fsync", "rename"):
        assert name in first, name
    assert over.count("rename") == 2 and "rmtree" in over
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert related(tmp_path / "a") == ["a"]
    assert loaded_version(tmp_path / "a") == 2


@pytest.mark.parametrize("truncate", [False, True], ids=["before-write", "half-written"])
def test_crash_at_every_step_of_save_adapter(tmp_path, crash_plan, truncate) -> None:
    plan = crash_plan(WRITERS)
    save(tmp_path / "probe", 1)
    _, calls = plan.run(partial(save, tmp_path / "probe", 2))
    n = len(calls)
    assert n >= 12
    for over in (False, True):
        for k in range(n):
            folder = tmp_path / f"{'over' if over else 'first'}{k}"
            if over:
                save(folder, 1)
            crashed, _ = plan.run(partial(save, folder, 2), crash_at=k, truncate=truncate)
            got = loaded_version(folder)
            if crashed:
                assert got in ((1, 2) if over else (None, 2)), (over, k, got)
            if (folder / "adapter_config.json").exists():
                _files.read_json(folder / "adapter_config.json")  # never truncated in place
            save(folder, 3)
            assert loaded_version(folder) == 3
            assert related(folder) == [folder.name], (over, k)  # no temporary file left
