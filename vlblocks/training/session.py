"""The run a recipe trains in: processes, folder, checkpoint, step bookkeeping, epoch log; not the loop itself.

Every recipe's ``main()`` repeats the same 100 lines around its 15 lines of real work: start torchrun, claim the run
folder (refusing to overwrite a run), resume from its checkpoint, walk the sharded batches of each epoch from the
resume position with a progress bar, take each step's stop / skip / non-finite decision on all ranks together,
average the epoch's loss across a resume, log and print one row per epoch, save atomically, and say how it ended.
``start_run`` gives a ``TrainingRun`` that does exactly these, so a recipe reads::

    with T.start_run(args, task="vqa") as run:
        model = ...; run.track(model=model, optimizer=optimizer, scheduler=scheduler)   # what a checkpoint holds
        run.restore()                                                                      # --resume
        for epoch, batches in run.epochs(groups, per_batch=per_batch):
            for indices in run.progress(batches):
                batch = collate([dataset[i] for i in indices])
                loss = loss_fn(ddp(batch), batch) if batch else None     # None: this rank's batch was empty
                if not run.optimizer_step(loss):                         # backward, clip, optimizer, scheduler
                    break
            if run.epoch_complete:
                run.end_epoch(evaluate(model, val))                      # one row: epoch, step, loss, metrics
            run.save()
    return run.finish()

It is not a Trainer: it never calls the model, owns no loss, no data and no callbacks. The forward pass, the loss,
the evaluation and the report stay in the recipe, where a reader sees them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from vlblocks.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from vlblocks.training.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from vlblocks.training.logging import MetricLogger, format_table
from vlblocks.training.loop import StepDecision, agree, reseed, resume_position, shard_batches, stop_on_signal
from vlblocks.training.run import RunFolderError, prepare_run_dir, progress, save_run_config, say
from vlblocks.training.seed import seed_everything

__all__ = ["TrainingRun", "start_run", "to_device", "usage_error"]


def usage_error(message: str) -> NoReturn:
    """Exit as argparse does for a bad flag: ``<script>: error: <message>`` on stderr, exit code 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    sys.exit(2)


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch with every tensor on `device` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class TrainingRun:
    """One invocation of a recipe's training: see the module docstring for the loop it serves.

    Attributes: ``args`` (the parsed flags: ``output_dir``, ``seed``, ``epochs``, ``max_steps``, ``resume``,
    ``stop_after``, ``save_every``), ``dist`` (``DistInfo``), ``out`` (the run folder), ``state`` (the JSON state a
    checkpoint carries: ``step``, the running ``loss_sum`` / ``loss_count`` of the epoch, and anything the recipe
    adds), ``history`` (the epoch rows), ``code`` (the exit code: 1 after a non-finite loss).

    `cleanup`: leaving the ``with`` block also leaves torchrun's process group (False: a recipe that trains several
    runs in one process, one after the other, keeps it for the next).
    """

    def __init__(
        self, args: argparse.Namespace, dist: DistInfo, out: Path, *, task: str, cleanup: bool = True
    ) -> None:
        self.args, self.dist, self.out, self.task, self.cleanup = args, dist, out, task, cleanup
        self.t0 = time.perf_counter()
        self.ckpt = out / "checkpoint"
        self.resumed = bool(getattr(args, "resume", False)) and has_checkpoint(self.ckpt)
        fresh = {"step": 0, "loss_sum": 0.0, "loss_count": 0}
        self.state: dict[str, Any] = read_checkpoint_state(self.ckpt) if self.resumed else fresh
        self.log = MetricLogger(out / "metrics.jsonl", rank=dist.rank)
        self.history: list[dict[str, Any]] = []
        self.code, self.stopped, self.steps_per_epoch, self.total = 0, False, 0, 0
        self._run_steps, self._tracked, self._bar, self._t_epoch = 0, {}, None, time.perf_counter()
        self._postfix: dict[str, str] = {}
        self._signal = stop_on_signal(message="stop requested: saving a checkpoint at the end of this step")
        self._stop = None

    # ------------------------------------------------------------------------- setup

    def __enter__(self) -> TrainingRun:
        self._stop = self._signal.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._signal.__exit__(*exc)
        if self.cleanup:
            cleanup_distributed()

    @property
    def step(self) -> int:
        """Global optimizer steps taken so far (across resumes)."""
        return self.state["step"]

    def say(self, *parts: Any) -> None:
        """Print on the main process only, without breaking a progress bar."""
        say(*parts, enabled=self.dist.is_main)

    def save_config(self, **extra: Any) -> None:
        """Write ``run_config.json`` (the flags and `extra`, e.g. the model preset) on the main process."""
        if self.dist.is_main:
            save_run_config(self.out, task=self.task, args=self.args, **extra)

    def track(self, **objects: Any) -> None:
        """What a checkpoint holds and ``step`` drives: ``model``, ``optimizer``, ``scheduler`` (call again when
        one is replaced, e.g. a new optimizer for a second training stage)."""
        self._tracked.update(objects)

    def restore(self) -> None:
        """Load the tracked objects from the checkpoint when resuming (``state`` was read at start)."""
        if self.resumed:
            load_checkpoint(self.ckpt, **self._tracked)
            self.say(f"resumed from {self.ckpt} at step {self.step}")

    def save(self) -> None:
        """Checkpoint the tracked objects and ``state`` atomically (main process); nothing after a non-finite
        loss, so the last good checkpoint stays."""
        if self.dist.is_main and not self.code:
            save_checkpoint(self.ckpt, **self._tracked, state=self.state)

    def next_training(self, checkpoint: str) -> None:
        """Start another training in the same run, with its own checkpoint folder ``out / checkpoint``, step count,
        running loss and epoch rows (``--resume`` reads that folder's state; ``--stop-after`` counts anew): e.g.
        one per head of a comparison that trains several models on the same data. Call ``track`` and ``plan``
        again for it."""
        self.ckpt = self.out / checkpoint
        self.resumed = bool(getattr(self.args, "resume", False)) and has_checkpoint(self.ckpt)
        fresh = {"step": 0, "loss_sum": 0.0, "loss_count": 0}
        self.state = read_checkpoint_state(self.ckpt) if self.resumed else fresh
        self.history, self.code, self.stopped, self.steps_per_epoch, self.total = [], 0, False, 0, 0
        self._run_steps, self._tracked = 0, {}

    # ------------------------------------------------------------------------- the loop

    def plan(self, groups: int | Sequence[Sequence[int]], *, per_batch: int, drop_last: bool = False) -> int:
        """Fix the steps of an epoch (per rank: every rank takes the same number) and return the run's total:
        ``--epochs`` of them, capped by ``--max-steps``. Call it before building a schedule over the total.
        `drop_last`: every step takes a full batch (an epoch's last, partial batch is left out)."""
        num = groups if isinstance(groups, int) else len(groups)
        batches = num // per_batch if drop_last else math.ceil(num / per_batch)
        self.steps_per_epoch = batches // self.dist.world_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has no step: {num} groups in batches of {per_batch} over {self.dist.world_size} "
                "processes; lower the batch size or add data"
            )
        self.total = min(self.args.epochs * self.steps_per_epoch, self.args.max_steps or 10**12)
        return self.total

    def epoch_batches(self, groups: int | Sequence[Sequence[int]], *, per_batch: int, epoch: int) -> list:
        """This rank's batches of `epoch` (deterministic in seed, epoch, rank and world size)."""
        return shard_batches(
            groups,
            per_batch=per_batch,
            seed=self.args.seed,
            epoch=epoch,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def epochs(self, groups: int | Sequence[Sequence[int]], *, per_batch: int) -> Iterator[tuple[int, list]]:
        """``(epoch, batches)`` from the resume position on: the epoch's planned batches (``plan``), those of a
        resumed epoch from its first batch not yet done. Ends after the last epoch, at ``--max-steps``, on a stop
        request or a non-finite loss."""
        if not self.steps_per_epoch:
            self.plan(groups, per_batch=per_batch)
        epoch0, first = resume_position(self.step, self.steps_per_epoch)
        for epoch in range(epoch0, self.args.epochs):
            if self.over:
                return
            self._epoch = epoch
            batches = self.epoch_batches(groups, per_batch=per_batch, epoch=epoch)
            yield epoch, batches[first if epoch == epoch0 else 0 : self.steps_per_epoch]

    def progress(self, batches: list) -> Iterator[Any]:
        """Each batch under a progress bar, the global RNG reseeded from (seed, step, rank) first (dropout and
        augmentation then repeat bit for bit after a resume); stops at the run's total."""
        self._t_epoch = time.perf_counter()
        desc = f"epoch {self._epoch + 1}/{self.args.epochs}"
        self._bar = progress(batches, desc=desc, enabled=self.dist.is_main)
        for batch in self._bar:
            if self.step >= self.total:
                break
            reseed(self.args.seed, self.step, self.dist.rank, world_size=self.dist.world_size)
            yield batch

    def optimizer_step(
        self,
        loss: torch.Tensor | None,
        *,
        clip_norm: float | None = 1.0,
        clip_parameters: Iterable[torch.Tensor] | None = None,
    ) -> bool:
        """One optimizer step on `loss` (``None``: this rank's batch was empty), decided on all ranks together.

        The gradients are clipped to `clip_norm` (None: not clipped) over `clip_parameters`, by default the tracked
        model's ``parameters()`` (pass them when the tracked model is a view that holds no parameters of its own).

        A stop request (Ctrl-C, SIGTERM, ``--stop-after``) on any rank stops every rank after this step; a non-finite
        loss on any rank stops every rank before it (exit code 1, the last good checkpoint kept); an empty batch on any
        rank skips the update everywhere (the step still counts). Saves every ``--save-every`` steps.

        Returns:
            True to go on, False to leave the epoch's loop.
        """
        stop_after = getattr(self.args, "stop_after", 0)
        decision: StepDecision = agree(loss, stop=self._stop.requested or self._run_steps + 1 == stop_after)
        if decision.nonfinite:
            self.say(
                f"non-finite loss at step {self.step}: stopping; the last good checkpoint in {self.ckpt} is kept"
            )
            self.code = 1
            return False
        if not decision.skip:
            optimizer, scheduler = self._tracked["optimizer"], self._tracked.get("scheduler")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                params = self._tracked["model"].parameters() if clip_parameters is None else clip_parameters
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            self.state.update(
                loss_sum=self.state["loss_sum"] + decision.loss, loss_count=self.state["loss_count"] + 1
            )
            lr = optimizer.param_groups[0]["lr"]
            self._postfix = {"loss": f"{decision.loss:.3f}", "lr": f"{lr:.1e}"}
            self._bar.set_postfix(self._postfix)
        self.state["step"] += 1
        self._run_steps += 1
        self.stopped = decision.stop
        if self.args.save_every and self.step % self.args.save_every == 0 and not self.stopped:
            self.save()
        return not self.stopped

    def show(self, **values: Any) -> None:
        """Show `values` on the progress bar after the last step's loss and lr (e.g. a learned temperature)."""
        self._postfix.update({k: str(v) for k, v in values.items()})
        if self._bar is not None:
            self._bar.set_postfix(self._postfix)

    @property
    def over(self) -> bool:
        """True once the run stopped, failed or reached its total."""
        return bool(self.code or self.stopped or self.step >= self.total)

    @property
    def epoch_complete(self) -> bool:
        """True at the end of a full epoch (or the run's last step) with at least one step in its loss."""
        done = self.step % self.steps_per_epoch == 0 or self.step >= self.total
        return bool(done and not self.code and self.state["loss_count"])

    def end_epoch(
        self, metrics: dict[str, Any], *, time_key: str | None = "time_s", **log_only: Any
    ) -> dict[str, Any]:
        """Log and print the epoch row ``{epoch, step, loss, **metrics, time_s}``; `log_only` values go to
        metrics.jsonl only. `time_key`: the column of the epoch's wall seconds (None: no such column, e.g. when the
        recipe times its epochs itself in `metrics`). Resets the running loss."""
        row = {
            "epoch": self._epoch + 1,
            "step": self.step,
            "loss": self.state["loss_sum"] / self.state["loss_count"],
        }
        row |= metrics
        if time_key is not None:
            row[time_key] = time.perf_counter() - self._t_epoch
        self.log.log(**row, **log_only)
        self.history.append(row)
        table = format_table([row])
        self.say(table if len(self.history) == 1 else table.splitlines()[-1])
        self.state.update(loss_sum=0.0, loss_count=0)
        return row

    @property
    def completed(self) -> bool:
        """True when every planned step ran and at least one epoch was logged."""
        return bool(not self.code and self.step >= self.total and self.history)

    def finish(self) -> int:
        """Say how the run ended and return the exit code (0, or 1 after a non-finite loss)."""
        if not self.code and self.step < self.total:
            self.say(
                f"stopped at step {self.step}/{self.total}; checkpoint in {self.ckpt}; continue with --resume"
            )
        elif not self.code:
            self.say(f"done in {time.perf_counter() - self.t0:.0f}s; outputs in {self.out}")
        return self.code


def start_run(args: argparse.Namespace, *, task: str) -> TrainingRun:
    """Start a recipe's run from its flags: CPU threads, torchrun's process group, the run folder (a folder that
    holds a run is refused unless ``--resume`` / ``--overwrite``: a usage error naming both), and the seed.

    Use as ``with start_run(args, task="vqa") as run:``; Ctrl-C / SIGTERM inside ask for a stop at the next step
    boundary (a checkpoint is written), and the process group is destroyed on exit.
    """
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "auto")
    dist = setup_distributed(device=None if device == "auto" else device)
    try:
        out = prepare_run_dir(
            args.output_dir,
            resume=getattr(args, "resume", False),
            overwrite=getattr(args, "overwrite", False),
            main=dist.is_main,
        )
    except RunFolderError as err:
        usage_error(str(err))
    barrier()  # every rank has looked at the folder before rank 0 writes into it
    seed_everything(args.seed)
    return TrainingRun(args, dist, out, task=task)
