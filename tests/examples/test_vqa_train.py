"""examples/vqa_train.py end to end in subprocesses: a short run, exact resume, non-finite loss, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "vqa_train.py"
TINY = [
    "--num-scenes",
    "48",
    "--dim",
    "32",
    "--heads",
    "2",
    "--depth",
    "1",
    "--hidden",
    "32",
    "--batch-size",
    "40",
]


def run(
    args: list[str], *, launcher: list[str] | None = None, timeout: int = 240
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [*(launcher or [sys.executable]), str(SCRIPT), *TINY, "--threads", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_short_run_writes_metrics_checkpoint_and_grid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = ok(run(["--epochs", "2", "--output-dir", str(out)]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss", "accuracy", "vqa_accuracy", "precision", "recall", "f1", "time_s", "by_type"):
        assert key in rows[-1]
    assert set(rows[-1]["by_type"]) == {"color", "shape", "count", "exist", "relation"}
    assert "majority_baseline" in proc.stdout and "most predicted answers" in proc.stdout
    files = {p.name for p in (out / "checkpoint").iterdir()}
    assert "model.safetensors" in files and all(f.endswith((".safetensors", ".json")) for f in files)
    assert (out / "predictions.png").stat().st_size > 1000
    assert (out / "tokenizer" / "tokenizer.json").exists() and (out / "vocab.json").exists()


def test_resume_gives_the_same_final_weights(tmp_path: Path) -> None:
    common = ["--epochs", "2", "--dropout", "0.1", "--augment"]
    ok(run([*common, "--output-dir", str(tmp_path / "straight")]))
    interrupted = tmp_path / "interrupted"
    proc = ok(run([*common, "--output-dir", str(interrupted), "--stop-after", "3"]))
    assert "continue with --resume" in proc.stdout
    state = json.loads((interrupted / "checkpoint" / "trainer_state.json").read_text())
    assert state["state"]["step"] == 3
    ok(run([*common, "--output-dir", str(interrupted), "--resume"]))
    a = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    b = load_file(interrupted / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "nan"
    proc = run(
        ["--epochs", "1", "--lr", "1e30", "--warmup", "0", "--save-every", "1", "--output-dir", str(out)]
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "non-finite loss" in proc.stdout
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["state"]["step"] >= 1  # the checkpoint of the last finite step is still there
    tensors = load_file(out / "checkpoint" / "model.safetensors")
    assert tensors


def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = ok(run(["--epochs", "1", "--output-dir", str(out)], launcher=launcher, timeout=300))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # only rank 0 logs
    assert proc.stdout.count("model:") == 1  # only rank 0 prints


@pytest.mark.parametrize("bad", [["--train-fraction", "0"], ["--data", "vqav2"]])
def test_bad_flags_exit_with_a_message(bad: list[str], tmp_path: Path) -> None:
    proc = run([*bad, "--output-dir", str(tmp_path)])
    assert proc.returncode == 2 and ("--train-fraction" in proc.stderr or "--data-root" in proc.stderr)


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (
            ["--fusion", "concat", "--loss", "soft-bce", "--class-weights", "--augment", "--max-steps", "3"],
            None,
        ),
        (["--image-encoder", "tiny-vit", "--text-encoder", "tiny-roberta", "--freeze-encoders"], None),
        (["--summary", "cls", "--self-attn", "--pool", "add", "--no-encoder-skip", "--max-steps", "3"], None),
        (["--two-stage", "--lora-r", "4", "--lora-targets", "query,value", "--epochs", "2"], "stage 2"),
    ],
)
def test_report_experiment_flags_run(flags: list[str], expect: str | None, tmp_path: Path) -> None:
    out = tmp_path / "flags"
    proc = ok(run(["--epochs", "1", *flags, "--output-dir", str(out)]))
    if expect:
        assert expect in proc.stdout
    tensors = load_file(out / "checkpoint" / "model.safetensors")
    if "--lora-r" in flags:
        assert any("lora_A" in k for k in tensors), "LoRA weights missing from the checkpoint"
    if "--freeze-encoders" in flags:
        assert "trainable" in proc.stdout and "(100.0%)" not in proc.stdout
