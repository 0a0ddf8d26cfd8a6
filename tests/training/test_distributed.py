"""Distributed helpers: single-process fallback, and a real 2-process gloo run launched with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from vlblocks.training import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    gather_lists,
    get_rank,
    get_world_size,
    is_main_process,
    print0,
    setup_distributed,
)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_single_process_fallback(no_torchrun_env, capsys) -> None:
    info = setup_distributed(device="cpu")
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), is_main=True)
    assert not info.distributed
    assert get_rank() == 0 and get_world_size() == 1 and is_main_process()
    x = torch.tensor([1, 2, 3])
    mean = all_reduce_mean(x)
    assert mean.dtype == torch.float64 and torch.equal(mean, x.double()) and mean is not x
    assert all_reduce_mean(2.5) == torch.tensor(2.5)
    assert gather_lists([1, "a", {"k": 2}]) == [1, "a", {"k": 2}]
    barrier()
    print0("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"
    cleanup_distributed()  # no-op


def test_default_device(no_torchrun_env) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert setup_distributed().device.type == expected


def test_errors(no_torchrun_env, monkeypatch) -> None:
    with pytest.raises(ValueError, match="device must be None, 'cpu' or 'cuda'"):
        setup_distributed(device="tpu")
    with pytest.raises(ValueError, match="backend must be None, 'nccl' or 'gloo'"):
        setup_distributed(backend="mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            setup_distributed(device="cuda")
    with pytest.raises(TypeError, match="tensor must be a torch.Tensor or a number"):
        all_reduce_mean("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="items must be a list"):
        gather_lists("abc")  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an int"):
        setup_distributed(device="cpu")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE=2\)"):
        setup_distributed(device="cpu")


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from vlblocks.training import (MetricLogger, all_reduce_mean, barrier, cleanup_distributed, gather_lists,
                                   get_world_size, is_main_process, print0, setup_distributed)

    out_dir = sys.argv[1]
    info = setup_distributed(device="cpu")
    r = info.rank
    mean = all_reduce_mean(torch.tensor([r + 1.0, 10.0 * r]))
    int_mean = all_reduce_mean(torch.tensor([r], dtype=torch.long))
    gathered = gather_lists([f"r{r}"] * (r + 1) + [{"rank": r, "acc": 0.5 * r}])
    empty = gather_lists([] if r == 0 else ["only1"])
    MetricLogger(os.path.join(out_dir, "metrics.jsonl"), rank=r).log(rank=r, mean=mean)
    print0(f"PRINT0 from {r}")
    barrier()
    result = {"rank": r, "local_rank": info.local_rank, "world": info.world_size, "is_main": info.is_main,
              "main": is_main_process(), "ws": get_world_size(), "distributed": info.distributed,
              "mean": mean.tolist(), "int_mean": int_mean.tolist(), "gathered": gathered, "empty": empty}
    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(result, f)
    cleanup_distributed()
    """
)


def test_two_process_gloo_with_torchrun(tmp_path) -> None:
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
    ]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, res in enumerate(results):
        assert (res["rank"], res["local_rank"], res["world"], res["ws"]) == (r, r, 2, 2)
        assert res["is_main"] == res["main"] == (r == 0) and res["distributed"]
        assert res["mean"] == [1.5, 5.0]
        assert res["int_mean"] == [0.5]
        assert res["gathered"] == ["r0", {"rank": 0, "acc": 0.0}, "r1", "r1", {"rank": 1, "acc": 0.5}]
        assert res["empty"] == ["only1"]
    assert proc.stdout.count("PRINT0 from") == 1 and "PRINT0 from 0" in proc.stdout
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["rank"] == 0  # only rank 0 logs
