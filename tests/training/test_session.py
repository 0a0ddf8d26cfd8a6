"""TrainingRun / start_run in one process: the step bookkeeping, the non-finite stop, empty batches, the epoch rows,
and a stop + resume that ends bit for bit where an uninterrupted run ends (the recipes' multi-process behaviour is
tested through examples/vqa_train.py under torchrun)."""

from __future__ import annotations

import argparse
import math
import sys

import pytest
import torch
from torch import nn

from vlblocks import training as T

NUM_ITEMS, PER_BATCH = 24, 4  # 6 steps per epoch


def make_args(tmp_path, **over) -> argparse.Namespace:
    args = dict(
        output_dir=str(tmp_path / "run"),
        seed=0,
        epochs=2,
        max_steps=0,
        resume=False,
        overwrite=False,
        stop_after=0,
        save_every=0,
        threads=0,
        device="cpu",
    )
    return argparse.Namespace(**(args | over))


def train(args, *, loss_at=None) -> tuple[T.TrainingRun, nn.Module, list[list[int]]]:
    """A linear regression through the run's loop; `loss_at(step, loss)` may replace a step's loss."""
    torch.manual_seed(0)
    x, y = torch.randn(NUM_ITEMS, 3), torch.randn(NUM_ITEMS, 1)
    seen: list[list[int]] = []
    with T.start_run(args, task="test") as run:
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        run.track(model=model, optimizer=optimizer)
        run.restore()
        for _, batches in run.epochs(NUM_ITEMS, per_batch=PER_BATCH):
            for indices in run.progress(batches):
                seen.append(list(indices))
                loss = nn.functional.mse_loss(model(x[indices]), y[indices])
                loss = loss_at(run.step, loss) if loss_at else loss
                if not run.optimizer_step(loss):
                    break
            if run.epoch_complete:
                run.end_epoch({"metric": float(run.step)})
            run.save()
        run.code = run.finish()
    return run, model, seen


def test_plan_and_epochs(tmp_path):
    run, _, seen = train(make_args(tmp_path))
    assert run.steps_per_epoch == math.ceil(NUM_ITEMS / PER_BATCH) and run.total == 12 and run.step == 12
    assert len(seen) == 12 and run.completed and run.code == 0
    # each epoch is a permutation of all items, and the two epochs are ordered differently
    for epoch in (seen[:6], seen[6:]):
        assert sorted(i for b in epoch for i in b) == list(range(NUM_ITEMS))
    assert seen[:6] != seen[6:]
    assert [r["epoch"] for r in run.history] == [1, 2] and [r["step"] for r in run.history] == [6, 12]
    assert T.read_jsonl(tmp_path / "run" / "metrics.jsonl")[1]["metric"] == 12.0


def test_max_steps_caps_the_total(tmp_path):
    run, _, seen = train(make_args(tmp_path, max_steps=8))
    assert run.total == 8 and run.step == 8 and len(seen) == 8
    assert [r["step"] for r in run.history] == [6, 8]  # the last, partial epoch is logged too


def test_nonfinite_loss_stops_with_code_1_and_keeps_the_last_checkpoint(tmp_path):
    def nan_at_4(step, loss):
        return loss * float("nan") if step == 4 else loss

    run, _, _ = train(make_args(tmp_path, save_every=2), loss_at=nan_at_4)
    assert run.code == 1 and run.step == 4 and not run.completed
    assert T.read_checkpoint_state(tmp_path / "run" / "checkpoint")["step"] == 4  # from save_every, not after NaN


def test_empty_batch_skips_the_update_but_counts_the_step(tmp_path):
    used = []

    def empty_at_2(step, loss):
        if step == 2:
            return None
        used.append(loss.item())
        return loss

    run, _, seen = train(make_args(tmp_path, epochs=1), loss_at=empty_at_2)
    assert run.step == 6 and len(seen) == 6 and run.code == 0 and len(used) == 5
    assert run.history[0]["loss"] == pytest.approx(sum(used) / 5)  # the mean over the updates taken


def test_stop_and_resume_match_an_uninterrupted_run(tmp_path):
    _, straight, _ = train(make_args(tmp_path / "a"))
    stopped, _, first = train(make_args(tmp_path / "b", stop_after=4))
    assert stopped.step == 4 and stopped.stopped and stopped.code == 0 and not stopped.completed
    resumed, model, rest = train(make_args(tmp_path / "b", resume=True))
    assert resumed.resumed and resumed.step == 12 and len(first) + len(rest) == 12
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a, b)
    # the resumed epoch's loss averages the whole epoch, steps before the stop included
    rows = T.read_jsonl(tmp_path / "b" / "run" / "metrics.jsonl")
    straight_rows = T.read_jsonl(tmp_path / "a" / "run" / "metrics.jsonl")
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in straight_rows])


def test_a_folder_holding_a_run_is_refused(tmp_path, capsys):
    train(make_args(tmp_path, epochs=1))
    with pytest.raises(SystemExit) as exc:
        train(make_args(tmp_path, epochs=1))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err


def test_plan_rejects_an_epoch_without_steps(tmp_path):
    with T.start_run(make_args(tmp_path), task="test") as run, pytest.raises(ValueError, match="no step"):
        run.plan(0, per_batch=4)


def test_plan_drop_last_leaves_out_the_partial_batch(tmp_path):
    """26 items in batches of 4: 7 steps an epoch (the last one of 2 items), or the 6 full ones with drop_last."""
    order = {}
    for drop_last, steps in ((False, 7), (True, 6)):
        with T.start_run(make_args(tmp_path / str(drop_last), epochs=1), task="test") as run:
            assert run.plan(26, per_batch=4, drop_last=drop_last) == steps == run.steps_per_epoch
            ((_, batches),) = run.epochs(26, per_batch=4)
            order[drop_last] = batches
    assert [len(b) for b in order[False]] == [4] * 6 + [2] and order[True] == order[False][:6]
    with T.start_run(make_args(tmp_path / "few"), task="test") as run:
        with pytest.raises(ValueError, match="no step"):
            run.plan(3, per_batch=4, drop_last=True)  # a partial batch only


def test_show_puts_values_on_the_progress_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar is drawn
    model = nn.Linear(3, 1)
    with T.start_run(make_args(tmp_path, epochs=1), task="test") as run:
        run.track(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        for _, batches in run.epochs(8, per_batch=4):
            for _ in run.progress(batches):
                run.optimizer_step(model(torch.ones(4, 3)).pow(2).mean())
                run.show(scale=f"{12.5:.1f}")
    err = capsys.readouterr().err
    assert "loss=" in err and "lr=" in err and "scale=12.5" in err


@pytest.mark.filterwarnings("ignore:`parameters` is an empty generator")
def test_clip_parameters_clips_a_model_the_tracked_view_does_not_hold(tmp_path):
    """The tracked model may be a view without parameters of its own (as TrainedView): by default nothing is
    clipped then; `clip_parameters` names the parameters whose gradient norm is clipped."""
    norms = {}
    for name, clip in (("default", False), ("named", True)):
        model = nn.Linear(3, 1)
        with T.start_run(make_args(tmp_path / name, epochs=1), task="test") as run:
            run.track(model=nn.Module(), optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
            for _, batches in run.epochs(4, per_batch=4):
                for _ in run.progress(batches):
                    loss = model(torch.full((4, 3), 100.0)).pow(2).mean()
                    params = model.parameters() if clip else None
                    run.optimizer_step(loss, clip_norm=1.0, clip_parameters=params)
        norms[name] = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert norms["default"] > 10 and norms["named"] == pytest.approx(1.0, rel=1e-4)


def test_end_epoch_time_key(tmp_path):
    """The epoch row's wall seconds go to `time_key` ("time_s" by default); None leaves the column out."""
    model = nn.Linear(3, 1)
    with T.start_run(make_args(tmp_path, epochs=2), task="test") as run:
        run.track(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        for epoch, batches in run.epochs(4, per_batch=4):
            for _ in run.progress(batches):
                run.optimizer_step(model(torch.ones(4, 3)).pow(2).mean())
            run.end_epoch({"train_s": 1.5}, time_key=None if epoch else "time_s")
    first, second = run.history
    assert list(first) == ["epoch", "step", "loss", "train_s", "time_s"]
    assert list(second) == ["epoch", "step", "loss", "train_s"]
    assert [list(r)[1:] for r in T.read_jsonl(run.out / "metrics.jsonl")] == [list(first), list(second)]
