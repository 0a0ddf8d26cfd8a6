"""Loop helpers: signal handling restored, reseeding, sharded batch order, resume position, and the collective
stop / skip / NaN decisions in a real 2-process gloo run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from vlblocks.training import agree, chunk_groups, reseed, resume_position, shard_batches, stop_on_signal


def test_stop_on_signal_sets_the_flag_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_handlers_restored_after_an_exception() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"), stop_on_signal():
        assert signal.getsignal(signal.SIGTERM) is not before
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_second_sigint_raises() -> None:
    with pytest.raises(KeyboardInterrupt), stop_on_signal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGINT)


def test_reseed_depends_on_seed_step_rank_only() -> None:
    reseed(3, 10, 1, world_size=2)
    a = torch.rand(4)
    torch.rand(100)  # whatever happened in between
    reseed(3, 10, 1, world_size=2)
    assert torch.equal(a, torch.rand(4))
    reseed(3, 10, 0, world_size=2)
    assert not torch.equal(a, torch.rand(4))  # control: another rank draws differently
    reseed(3, 11, 1, world_size=2)
    assert not torch.equal(a, torch.rand(4))


def test_shard_batches_partition_and_determinism() -> None:
    groups = [[2 * i, 2 * i + 1] for i in range(23)]  # 23 groups of 2 items
    shards = [shard_batches(groups, per_batch=3, seed=0, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # 8 batches of the 8 usable (23 groups -> 8 batches, even)
    items = [i for shard in shards for batch in shard for i in batch]
    assert len(items) == len(set(items))  # no item twice
    for shard in shards:
        for batch in shard:  # groups stay whole
            assert all((i % 2 == 0) == (batch.index(i) % 2 == 0) for i in batch)
    assert shard_batches(groups, per_batch=3, seed=0, epoch=1, rank=0, world_size=2) == shards[0]
    assert shard_batches(groups, per_batch=3, seed=0, epoch=2, rank=0, world_size=2) != shards[0]
    single = shard_batches(10, per_batch=4, seed=1, epoch=0)
    assert sorted(i for b in single for i in b) == list(range(10))
    assert chunk_groups([[1], [2, 3], [4]], 2) == [[1, 2, 3], [4]]
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 1\], got 2"):
        shard_batches(10, per_batch=2, seed=0, epoch=0, rank=2, world_size=2)


def test_resume_position() -> None:
    assert resume_position(0, 5) == (0, 0)
    assert resume_position(7, 5) == (1, 2)
    assert resume_position(10, 5) == (2, 0)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive int"):
        resume_position(3, 0)


def test_agree_single_process() -> None:
    d = agree(torch.tensor(2.0))
    assert d == (False, False, False, 2.0)
    d = agree(torch.tensor(float("nan")), stop=True)
    assert d.nonfinite and d.stop and not d.skip and d.loss != d.loss
    d = agree(None)
    assert d.skip and not d.nonfinite
    with pytest.raises(ValueError, match="loss must be a scalar tensor or None"):
        agree(torch.zeros(3))


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from vlblocks.training import agree, build_optimizer, cleanup_distributed, reseed, setup_distributed, wrap_ddp

    out_dir, scenario = sys.argv[1], sys.argv[2]
    info = setup_distributed(device="cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    ddp = wrap_ddp(model, info)
    opt = build_optimizer(model, lr=0.05)
    log, code = [], 0
    for step in range(8):
        reseed(0, step, info.rank, world_size=info.world_size)
        x = torch.randn(5, 4)
        empty = scenario == "skip" and info.rank == 1 and step == 2
        loss = None if empty else ddp(x).pow(2).mean()
        if scenario == "nan" and info.rank == 1 and step == 3:
            loss = loss * float("nan")
        d = agree(loss, stop=scenario == "stop" and info.rank == 0 and step == 4)
        if d.nonfinite:
            log.append(("nonfinite", step)); code = 1
            break
        if d.skip:
            log.append(("skip", step))
            continue
        opt.zero_grad(); loss.backward(); opt.step()
        log.append(("step", step))
        if d.stop:
            log.append(("stop", step))
            break
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    with open(os.path.join(out_dir, f"rank{info.rank}.json"), "w") as f:
        json.dump({"log": log, "weights": weights}, f)
    del ddp  # a DDP wrapper still alive at interpreter exit can abort the process (see cleanup_distributed)
    cleanup_distributed()
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)  # the decisions are made and written: skip interpreter teardown (see cleanup_distributed)
    """
)


@pytest.mark.parametrize(
    ("scenario", "code", "last"),
    [("nan", 1, ("nonfinite", 3)), ("skip", 0, ("step", 7)), ("stop", 0, ("stop", 4))],
)
def test_two_ranks_take_the_same_decisions(tmp_path, scenario, code, last) -> None:
    """One rank alone sees a NaN loss / an empty batch / a stop request: both ranks act at the same step, exit
    with the same code within the timeout, and end with identical weights."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # torchrun picks a free port itself: no race with another test for a port found free
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
        scenario,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["log"] == ranks[1]["log"]
    assert tuple(ranks[0]["log"][-1]) == last
    if scenario == "skip":
        assert ["skip", 2] in ranks[0]["log"]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept both ranks identical
