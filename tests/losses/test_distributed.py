"""Two gloo processes (DDP over a tiny two-tower model) give the loss and the gradients of one process with the
doubled batch, for contrastive_loss and siglip_loss; gather=False (the local loss) does not (the control)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 420  # above the workers' own 300 s collective timeout


def _worker_module():
    spec = importlib.util.spec_from_file_location("dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out)],
            env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return out


def _single_process(kind: str) -> dict[str, torch.Tensor]:
    worker = _worker_module()
    model = worker.TwoTower()
    x_image, x_text = worker.inputs()
    loss = worker.loss_of(kind, *model(x_image, x_text))
    loss.backward()
    return {"loss": loss.detach(), **{f"grad.{n}": p.grad for n, p in model.named_parameters()}}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_two_ranks_equal_one_process_with_the_doubled_batch(two_ranks: Path, kind: str) -> None:
    dist = load_file(str(two_ranks / f"{kind}.safetensors"))
    single = _single_process(kind)
    torch.testing.assert_close(dist["loss"].float(), single["loss"], atol=1e-6, rtol=0)
    torch.testing.assert_close(dist["open_clip_loss"].float(), single["loss"], atol=1e-6, rtol=0)
    for name, grad in single.items():
        if name.startswith("grad.") and not (kind == "clip" and name == "grad.bias"):
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(dist[name], grad, atol=1e-6, rtol=0)


def test_local_loss_without_gather_differs(two_ranks: Path) -> None:
    local = load_file(str(two_ranks / "clip_local.safetensors"))
    single = _single_process("clip")
    # each rank only sees its own 4 pairs: fewer negatives, a lower loss
    assert local["loss"] < single["loss"] - 0.1
    assert not torch.allclose(local["grad.image.weight"], single["grad.image.weight"], atol=1e-4)
