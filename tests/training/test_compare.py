"""compare_variants in one process: every variant trained into its own subfolder with its own flags, a shared
cache folder made once and linked, the table's rows (metrics, parameter counts, per-epoch times) in compare.json,
and no table when a variant stops early or fails; variant_row and variant_dir on their own."""

from __future__ import annotations

import argparse
import json
import time

import pytest
import torch
from torch import nn

from vlblocks import training as T
from vlblocks.utils import ParameterCount, count_parameters

NUM_ITEMS, PER_BATCH = 16, 4  # 4 steps per epoch
ONE = T.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), is_main=True)
VARIANTS = [("big lr", {"lr": 0.1}), ("small lr=0.01", {"lr": 0.01, "frozen_bias": True})]


def make_args(tmp_path, **over) -> argparse.Namespace:
    args = dict(output_dir=tmp_path / "cmp", seed=0, epochs=2, max_steps=0, resume=False, overwrite=False)
    args |= dict(stop_after=0, save_every=0, threads=0, device="cpu", lr=1.0, frozen_bias=False)
    return argparse.Namespace(**(args | over))


def train(run: T.TrainingRun, *, nan_at: int | None = None) -> tuple[dict, ParameterCount]:
    """A linear regression; writes a 'cache' folder unless one is there (the shared folder), times its epochs."""
    args = run.args
    run.save_config()
    cache = run.out / "cache"
    if not cache.exists():
        cache.mkdir()
        (cache / "made_by.txt").write_text(run.out.name)
    torch.manual_seed(0)
    x, y = torch.randn(NUM_ITEMS, 3), torch.randn(NUM_ITEMS, 1)
    model = nn.Linear(3, 1)
    model.bias.requires_grad_(not args.frozen_bias)
    run.track(
        model=model, optimizer=torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    )
    run.plan(NUM_ITEMS, per_batch=PER_BATCH)
    final: dict = {}
    for _, batches in run.epochs(NUM_ITEMS, per_batch=PER_BATCH):
        t0 = time.perf_counter()
        for indices in run.progress(batches):
            loss = nn.functional.mse_loss(model(x[indices]), y[indices])
            loss = loss * float("nan") if run.step == nan_at else loss
            if not run.optimizer_step(loss):
                break
        if run.epoch_complete:
            with torch.no_grad():
                final = {"mse": nn.functional.mse_loss(model(x), y).item(), "lr": args.lr}
            run.end_epoch(final | {"train_s": time.perf_counter() - t0, "train_cpu_s": 0.5}, time_key=None)
        run.save()
    return final, count_parameters(model)


def test_each_variant_trains_in_its_folder_and_the_table_is_written(tmp_path, capsys) -> None:
    args = make_args(tmp_path)
    code = T.compare_variants(
        args, ONE, VARIANTS, train, task="demo", metrics=("mse", "lr"), share=("cache",), label="test"
    )
    assert code == 0
    base = tmp_path / "cmp"
    rows = json.loads((base / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["big lr", "small lr=0.01"]
    assert [r["lr"] for r in rows] == [0.1, 0.01]  # each variant ran with its own flags
    assert list(rows[0]) == ["method", "mse", "lr", "trainable", "trainable %", "s/epoch", "CPU s/epoch"]
    assert (rows[0]["trainable"], rows[1]["trainable"]) == (4, 3) and rows[1]["trainable %"] == 75.0
    assert rows[0]["CPU s/epoch"] == 0.5 and rows[0]["s/epoch"] > 0
    for folder in ("big_lr", "small_lr0.01"):
        config = json.loads((base / folder / "run_config.json").read_text())
        assert config["args"]["output_dir"] == str(base / folder) and (base / folder / "checkpoint").is_dir()
        assert json.loads((base / folder / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    # the shared folder: made by the first variant, linked into the output folder and the second variant
    assert (base / "small_lr0.01" / "cache").is_symlink() and (base / "cache").is_symlink()
    assert (base / "small_lr0.01" / "cache" / "made_by.txt").read_text() == "big_lr"
    assert (base / "cache").resolve() == (base / "big_lr" / "cache").resolve()
    out = capsys.readouterr().out
    assert "=== big lr (test) ===" in out and "PEFT comparison, test:\n| method | mse | lr |" in out
    assert vars(args) == vars(make_args(tmp_path))  # the recipe's own flags are left as they were


def test_a_variant_that_stops_early_or_fails_ends_the_comparison_without_a_table(tmp_path, capsys) -> None:
    stopped = T.compare_variants(
        make_args(tmp_path, stop_after=3), ONE, VARIANTS, train, task="d", metrics=()
    )
    assert stopped == 1 and not (tmp_path / "cmp" / "compare.json").exists()
    assert not (tmp_path / "cmp" / "small_lr0.01").exists()  # the second variant never started
    assert "--compare stopped during big lr" in capsys.readouterr().out

    def fails(run):
        return train(run, nan_at=2)

    failed = T.compare_variants(make_args(tmp_path), ONE, VARIANTS, fails, task="d", metrics=())
    assert failed == 1 and not (tmp_path / "cmp" / "compare.json").exists()


def test_the_variant_folders_are_replaced_on_every_call(tmp_path) -> None:
    args = make_args(tmp_path, epochs=1)
    assert T.compare_variants(args, ONE, VARIANTS[:1], train, task="d", metrics=("mse",)) == 0
    (tmp_path / "cmp" / "big_lr" / "stale.txt").write_text("old")
    assert T.compare_variants(args, ONE, VARIANTS[:1], train, task="d", metrics=("mse",)) == 0
    assert not (tmp_path / "cmp" / "big_lr" / "stale.txt").exists()


def test_variant_row_and_dir() -> None:
    history = [{"train_s": 1.0, "train_cpu_s": 2.0}, {"train_s": 3.0, "train_cpu_s": 4.0}]
    row = T.variant_row(
        "LoRA r=8", history, {"CIDEr-D": 0.9, "x": 1}, ParameterCount(25, 100, 25.0), metrics=["CIDEr-D"]
    )
    assert row == {
        "method": "LoRA r=8",
        "CIDEr-D": 0.9,
        "trainable": 25,
        "trainable %": 25.0,
        "s/epoch": 2.0,
        "CPU s/epoch": 3.0,
    }
    untimed = T.variant_row("full", [{"loss": 1.0}], {}, ParameterCount(1, 1, 100.0), metrics=())
    assert untimed == {"method": "full", "trainable": 1, "trainable %": 100.0}  # no timing column: none
    with pytest.raises(KeyError, match="BLEU-4"):
        T.variant_row("full", history, {"CIDEr-D": 1.0}, ParameterCount(1, 1, 100.0), metrics=["BLEU-4"])
    with pytest.raises(ValueError, match="history"):
        T.variant_row("full", [], {}, ParameterCount(1, 1, 100.0), metrics=())
    assert [T.variant_dir(n) for n in ("LoRA r=16", "soft prompt", "full")] == [
        "LoRA_r16",
        "soft_prompt",
        "full",
    ]
