"""examples/vqa_train.py end to end in subprocesses: a short run, the learning check, exact resume, the non-finite
loss stop, torchrun, run-folder protection, --eval-only and --ask from the folder alone, flag validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from recipe_harness import ROOT, ok, rows, run_script
from safetensors.torch import load_file

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
    "--hidden-dim",
    "32",
    "--batch-size",
    "40",
]


def run(args: list[str], *, launcher: list[str] | None = None, timeout: int = 240, tiny: bool = True):
    args = [*(TINY if tiny else []), "--threads", "1", *args]
    return run_script(SCRIPT, args, launcher=launcher, timeout=timeout)


def test_short_run_writes_a_self_describing_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = ok(run(["--epochs", "2", "--output-dir", str(out)]))
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    for key in ("loss", "accuracy", "vqa_accuracy", "precision", "recall", "f1", "time_s", "by_type"):
        assert key in rows(out)[-1]
    assert set(rows(out)[-1]["by_type"]) == {"color", "shape", "count", "exist", "relation"}
    assert "majority_baseline" in proc.stdout and "most predicted answers" in proc.stdout
    files = {p.name for p in (out / "checkpoint").iterdir()}
    assert "model.safetensors" in files and all(f.endswith((".safetensors", ".json")) for f in files)
    assert (out / "predictions.png").stat().st_size > 1000
    config = json.loads((out / "run_config.json").read_text())
    assert config["task"] == "vqa" and config["model"]["dim"] == 32 and config["model"]["hidden_dim"] == 32
    assert "\r" not in proc.stderr  # not a terminal: no progress bars in the log

    # a second run into the same folder is refused and destroys nothing
    before = (out / "metrics.jsonl").read_text()
    proc = run(["--epochs", "1", "--output-dir", str(out)])
    assert proc.returncode != 0 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == before

    # --eval-only from the folder alone (no model flags) reproduces the last validation accuracy
    proc = ok(run(["--eval-only", "--output-dir", str(out)], tiny=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["vqa_accuracy"] == pytest.approx(rows(out)[-1]["vqa_accuracy"], abs=1e-9)
    assert summary["history"][-1] == summary["final"] and summary["history"][0]["epoch"] == 1  # every epoch's row
    assert {r["question_type"] for r in summary["by_type"]} == {"color", "shape", "count", "exist", "relation"}

    # --ask from the folder alone: top-5 answers with probabilities
    image = tmp_path / "scene.png"
    from vlblocks.data import ShapesWorld

    ShapesWorld("val", num_scenes=1, image_size=64, seed=3).scene(0).image.save(image)
    proc = ok(run(["--ask", str(image), "what color is the circle?", "--output-dir", str(out)], tiny=False))
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "answer" not in line]
    probs = [float(line.split("|")[2]) for line in table]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

    # --overwrite replaces the run
    ok(run(["--epochs", "1", "--output-dir", str(out), "--overwrite"]))
    assert [r["epoch"] for r in rows(out)] == [1]


def test_recipe_reads_a_shapesworld_export_as_vqa_v2(tmp_path: Path) -> None:
    """ShapesWorld.export() writes the VQA v2 layout, and --data vqav2 reads it through VQAv2Dataset.from_root."""
    from vlblocks.data import ShapesWorld

    root = tmp_path / "vqa"
    ShapesWorld("train", num_scenes=24, image_size=64).export(root)
    ShapesWorld("val", num_scenes=8, image_size=64).export(root)
    out = tmp_path / "run"
    proc = ok(run(["--data", "vqav2", "--data-root", str(root), "--epochs", "1", "--output-dir", str(out)]))
    assert "data: 120 train / 40 val questions" in proc.stdout
    assert (out / "summary.json").exists()
    # a wrong --data-root is a usage error naming the flag and the missing file, not a traceback
    proc = run(
        ["--data", "vqav2", "--data-root", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")]
    )
    assert proc.returncode == 2 and "--data-root" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )


def test_default_model_learns_beyond_the_majority_baseline(tmp_path: Path) -> None:
    """A short run of the default architecture beats answering each question type's most common answer."""
    out = tmp_path / "learn"
    # the default model on a small world: 400 scenes, 3 epochs, smaller batches than the default (more steps)
    flags = ["--num-scenes", "400", "--epochs", "3", "--batch-size", "48", "--lr", "1e-3"]
    ok(run([*flags, "--output-dir", str(out)], tiny=False, timeout=400))
    summary = json.loads((out / "summary.json").read_text())
    n = sum(r["questions"] for r in summary["by_type"])
    majority = sum(r["majority_baseline"] * r["questions"] for r in summary["by_type"]) / n
    assert summary["final"]["vqa_accuracy"] > majority + 0.10, (summary["final"], majority)


def test_resume_gives_the_same_weights_and_losses(tmp_path: Path) -> None:
    common = ["--epochs", "2", "--dropout", "0.1", "--augment"]
    ok(run([*common, "--output-dir", str(tmp_path / "straight")]))
    interrupted = tmp_path / "interrupted"
    proc = ok(run([*common, "--output-dir", str(interrupted), "--stop-after", "3"]))
    assert "continue with --resume" in proc.stdout
    state = json.loads((interrupted / "checkpoint" / "trainer_state.json").read_text())
    assert state["state"]["step"] == 3
    ok(run(["--output-dir", str(interrupted), "--resume"], tiny=False))  # the folder alone
    a = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    b = load_file(interrupted / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    # the resumed epoch's loss averages the whole epoch, not only the steps after the resume
    assert [r["loss"] for r in rows(interrupted)] == [r["loss"] for r in rows(tmp_path / "straight")]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "nan"
    proc = run(
        ["--epochs", "1", "--lr", "1e30", "--warmup", "0", "--save-every", "1", "--output-dir", str(out)]
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "non-finite loss" in proc.stdout
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["state"]["step"] >= 1  # the checkpoint of the last finite step is still there
    assert load_file(out / "checkpoint" / "model.safetensors")


def test_torchrun_two_processes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = ok(run(["--epochs", "1", "--output-dir", str(out)], launcher=launcher, timeout=300))
    assert len(rows(out)) == 1  # only rank 0 logs
    assert proc.stdout.count("model:") == 1  # only rank 0 prints


@pytest.mark.parametrize(
    ("bad", "flag"),
    [
        (["--train-fraction", "0"], "--train-fraction"),
        (["--data", "vqav2"], "--data-root"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1e-3"], "--lr"),
        (["--lr=-1e-3"], "--lr"),
        (["--eval-only"], "--output-dir"),
    ],
)
def test_bad_flags_exit_with_a_usage_message(bad: list[str], flag: str, tmp_path: Path) -> None:
    proc = run([*bad, "--output-dir", str(tmp_path / "none")])
    assert proc.returncode == 2 and flag in proc.stderr, proc.stderr[-1500:]


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
        assert (
            "image_encoder 0 modules" in proc.stdout
            and "warning: no module of the image_encoder" in proc.stdout
        )
    if "--freeze-encoders" in flags:
        assert "trainable" in proc.stdout and "(100.0%)" not in proc.stdout
