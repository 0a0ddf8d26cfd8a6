"""TrainingRun.next_training: two trainings in one run (e.g. one per segmentation head), each with its own checkpoint
folder, step count and epoch rows; stopped in the second and resumed, both end where uninterrupted runs end."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from vlblocks import training as T


def make_args(tmp_path, **over) -> argparse.Namespace:
    args = dict(
        output_dir=str(tmp_path / "run"), seed=0, epochs=2, max_steps=0, resume=False, overwrite=False
    )
    args |= dict(stop_after=0, save_every=0, threads=0, device="cpu")
    return argparse.Namespace(**(args | over))


def train_two(args) -> tuple[T.TrainingRun, dict[str, nn.Module], dict[str, int]]:
    """Two linear regressions, "a" (12 items) then "b" (8 items), in batches of 4 through one run."""
    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randn(12, 1)
    models, steps = {}, {}
    with T.start_run(args, task="test") as run:
        for name, n in (("a", 12), ("b", 8)):
            run.next_training(f"checkpoint-{name}")
            torch.manual_seed(1)
            models[name] = model = nn.Linear(3, 1)
            run.plan(n, per_batch=4)
            run.track(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
            run.restore()
            for _, batches in run.epochs(n, per_batch=4):
                for indices in run.progress(batches):
                    if not run.optimizer_step(nn.functional.mse_loss(model(x[indices]), y[indices])):
                        break
                if run.epoch_complete:
                    run.end_epoch({"training": name})
                run.save()
            steps[name] = run.step
            if run.step < run.total:
                break
        run.finish()
    return run, models, steps


def test_each_training_has_its_own_checkpoint_and_steps(tmp_path):
    run, models, steps = train_two(make_args(tmp_path))
    assert steps == {"a": 6, "b": 4}  # 3 and 2 steps per epoch, counted from 0 for each
    assert run.ckpt == run.out / "checkpoint-b" and [r["training"] for r in run.history] == ["b", "b"]
    rows = T.read_jsonl(run.out / "metrics.jsonl")
    assert [(r["training"], r["epoch"], r["step"]) for r in rows] == [
        ("a", 1, 3),
        ("a", 2, 6),
        ("b", 1, 2),
        ("b", 2, 4),
    ]
    for name in "ab":
        state = T.read_checkpoint_state(run.out / f"checkpoint-{name}")
        assert state["step"] == steps[name]


def test_stop_in_the_second_training_then_resume(tmp_path):
    _, full, _ = train_two(make_args(tmp_path / "full"))
    _, _, steps = train_two(make_args(tmp_path / "part", stop_after=4))
    assert steps == {"a": 4}
    # --stop-after counts each training's steps of this invocation: a's last 2, then 3 of b
    _, _, steps = train_two(make_args(tmp_path / "part", resume=True, stop_after=3))
    assert steps == {"a": 6, "b": 3}
    _, part, steps = train_two(make_args(tmp_path / "part", resume=True))
    assert steps == {"a": 6, "b": 4}  # a is done (no step), b continues from 3
    for name in "ab":
        assert torch.equal(full[name].weight, part[name].weight) and torch.equal(
            full[name].bias, part[name].bias
        )
