"""What every training loop needs around its steps: stopping, skipping, reseeding and the batch order.

- ``stop_on_signal()``: a context manager that turns Ctrl-C / SIGTERM into a request to stop at the next step
  boundary (so a checkpoint is written), restoring the previous handlers on exit.
- ``agree(...)``: the decisions that end or skip a step (a stop request, a non-finite loss, an empty batch) taken by
  all ranks together through one all-reduce, so under torchrun no rank is left waiting in the next collective.
- ``reseed(seed, step, rank)``: per-step seeding, so dropout and augmentation after a resume equal those of an
  uninterrupted run without saving any RNG state.
- ``shard_batches(...)`` and ``resume_position(...)``: the deterministic, sharded batch order of an epoch as a
  function of (seed, epoch, rank, world size), and where a checkpoint's step falls in it.

Shape legend: W world size; batches are lists of item indices.
"""

from __future__ import annotations

import itertools
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.distributed as dist

from vlblocks._checks import check_int, check_nonneg_int, check_positive_int

__all__ = [
    "StepDecision",
    "StopRequest",
    "agree",
    "chunk_groups",
    "reseed",
    "resume_position",
    "shard_batches",
    "stop_on_signal",
]


class StopRequest:
    """Set by SIGINT / SIGTERM: ``requested`` turns True; a second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self, *, message: str | None = None) -> None:
        self.requested = False
        self.message = message

    def _handle(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signal(
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM), *, message: str | None = None
) -> Iterator[StopRequest]:
    """``with stop_on_signal() as stop:`` ... ``if stop.requested: save and leave``.

    The previous handlers come back on exit, also after an exception. Outside the main thread (where Python
    cannot install handlers) the request simply never fires.
    """
    stop = StopRequest(message=message)
    previous = {}
    try:
        for sig in signals:
            try:
                previous[sig] = signal.signal(sig, stop._handle)
            except ValueError:  # not the main thread
                break
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StepDecision(NamedTuple):
    """What every rank does with this step. ``loss`` is the mean finite loss over the ranks that had one."""

    stop: bool
    skip: bool
    nonfinite: bool
    loss: float


def agree(loss: torch.Tensor | None, *, stop: bool = False) -> StepDecision:
    """One all-reduce that makes this step's decisions identical on every rank.

    Args:
        loss: this rank's loss (a scalar tensor), or ``None`` when this rank's batch was empty.
        stop: this rank's stop request (``StopRequest.requested``).

    Returns:
        ``StepDecision(stop, skip, nonfinite, loss)``: ``stop`` if any rank asked to stop, ``skip`` if any rank had
        no batch, ``nonfinite`` if any rank's loss is NaN / inf; ``loss`` is the mean of the finite losses.
        Without a process group it is the same decision for this process alone.
    """
    if loss is not None and (not isinstance(loss, torch.Tensor) or loss.numel() != 1):
        raise ValueError(f"loss must be a scalar tensor or None, got {type(loss).__name__}")
    value = loss.detach().float().reshape(()).cpu() if loss is not None else torch.tensor(0.0)
    finite = bool(torch.isfinite(value))
    flags = torch.tensor(
        [
            float(stop),
            float(loss is None),
            float(loss is not None and not finite),
            value.item() if finite and loss is not None else 0.0,
            float(finite and loss is not None),
        ],
        dtype=torch.float64,
    )  # (5,) stop, empty, nonfinite, loss sum, loss count
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        buf = flags.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        flags = buf.cpu()
    stop_n, empty_n, bad_n, total, count = flags.tolist()
    return StepDecision(stop_n > 0, empty_n > 0, bad_n > 0, total / count if count else float("nan"))


def reseed(seed: int, step: int, rank: int = 0, *, world_size: int = 1) -> int:
    """Seed torch's global generator from (seed, step, rank) and return the seed used.

    Call at the start of every step: dropout masks and random augmentation then depend only on where the run is,
    so a resumed run repeats the uninterrupted one bit for bit, and ranks draw different masks.
    """
    check_int("seed", seed)
    check_nonneg_int("step", step)
    check_nonneg_int("rank", rank)
    world_size = check_positive_int("world_size", world_size)
    value = (seed * 1_000_003 + step * world_size + rank) % (2**63 - 1)
    torch.manual_seed(value)
    return value


def chunk_groups(groups: Sequence[Sequence[int]], per_batch: int) -> list[list[int]]:
    """Consecutive runs of `per_batch` groups, each flattened into one batch of item indices."""
    per_batch = check_positive_int("per_batch", per_batch)
    return [list(itertools.chain(*groups[s : s + per_batch])) for s in range(0, len(groups), per_batch)]


def shard_batches(
    groups: int | Sequence[Sequence[int]],
    *,
    per_batch: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """This rank's batches of one epoch, a function of (seed, epoch, rank, world size) only.

    Args:
        groups: the number of items (each item its own group), or groups of item indices that must share a
            batch (e.g. every question about one image, so the image is encoded once).
        per_batch: groups per batch.

    Returns:
        ``len(batches) // world_size`` batches for this rank (the same count on every rank, so DDP ranks stay in
        step; the few leftover batches of an epoch are dropped, different ones each epoch).
    """
    if isinstance(groups, int):
        groups = [[i] for i in range(check_nonneg_int("groups", groups))]
    world_size = check_positive_int("world_size", world_size)
    check_int("rank", rank, low=0, high=world_size - 1)
    check_nonneg_int("epoch", epoch)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(groups), generator=g).tolist()
    batches = chunk_groups([groups[i] for i in order], per_batch)
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def resume_position(step: int, steps_per_epoch: int) -> tuple[int, int]:
    """``(epoch, batch)`` of global step `step`: the epoch to continue and the first batch of it not yet done."""
    check_nonneg_int("step", step)
    steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
    return divmod(step, steps_per_epoch)
