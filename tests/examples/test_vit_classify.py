"""examples/vit_classify.py end to end in subprocesses: a short run and its folder, --eval-only from the folder
alone, the learning check against the majority class, the PEFT modes on an image folder, flag validation."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from recipe_harness import ROOT, ok, rows, run_script
from safetensors.torch import load_file

SCRIPT = ROOT / "examples" / "vit_classify.py"
TINY = ["--num-scenes", "96", "--val-scenes", "32", "--dim", "32", "--depth", "1", "--heads", "2"]
TINY += ["--batch-size", "32"]


def run(args: list[str], *, tiny: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, [*(TINY if tiny else []), "--threads", "1", *args], timeout=timeout)


def test_short_run_writes_a_self_describing_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = ok(run(["--epochs", "2", "--output-dir", str(out)]))
    assert [r["epoch"] for r in rows(out)] == [1, 2]
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in rows(out))
    assert "majority-class baseline" in proc.stdout
    files = {p.name for p in (out / "checkpoint").iterdir()}
    assert "model.safetensors" in files and all(f.endswith((".safetensors", ".json")) for f in files)
    assert (out / "predictions.png").stat().st_size > 1000
    config = json.loads((out / "run_config.json").read_text())
    assert config["task"] == "vit" and config["class_names"] == ["circle", "square", "triangle"]
    assert config["args"]["dim"] == 32 and config["image_size"] == 64

    # a second run into the same folder is refused and destroys nothing
    before = (out / "metrics.jsonl").read_text()
    proc = run(["--epochs", "1", "--output-dir", str(out)])
    assert proc.returncode != 0 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "metrics.jsonl").read_text() == before

    # --eval-only from the folder alone (no model flags) reproduces the last validation accuracy
    ok(run(["--eval-only", "--output-dir", str(out)], tiny=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(rows(out)[-1]["accuracy"], abs=1e-9)
    assert summary["final"]["eval_only"] is True


def test_default_model_learns_beyond_the_majority_class(tmp_path: Path) -> None:
    """A short run of the default architecture (smaller data) clearly beats predicting the commonest class."""
    out = tmp_path / "learn"
    flags = ["--num-scenes", "1200", "--val-scenes", "200", "--epochs", "8", "--output-dir", str(out)]
    ok(run(flags, tiny=False, timeout=900))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] > summary["majority_baseline"] + 0.10, summary


def _image_folder(root: Path) -> Path:
    """Two classes a model can tell apart: red and blue squares of varying size on gray."""
    from PIL import Image, ImageDraw

    for c, colour in enumerate(["red", "blue"]):
        (root / colour).mkdir(parents=True)
        for i in range(20):
            image = Image.new("RGB", (40 + i, 48), "gray")
            ImageDraw.Draw(image).rectangle([5, 5, 20 + i % 10, 25], fill=colour)
            image.save(root / colour / f"{c}_{i}.png")
    (root / "notes.txt").write_text("not a class")
    return root


@pytest.mark.parametrize(("peft", "trainable"), [("lora", "lora_A"), ("linear-probe", None)])
def test_peft_modes_on_an_image_folder(peft: str, trainable: str | None, tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    out = tmp_path / peft
    flags = [
        "--image-dir",
        str(data),
        "--peft",
        peft,
        "--lora-r",
        "2",
        "--batch-size",
        "8",
        "--max-steps",
        "3",
    ]
    proc = ok(run([*flags, "--output-dir", str(out)]))
    config = json.loads((out / "run_config.json").read_text())
    assert config["class_names"] == ["blue", "red"]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("model:"))
    assert "(100.0%)" not in line, line  # only part of the model trains
    tensors = load_file(out / "checkpoint" / "model.safetensors")
    assert any("lora_A" in k for k in tensors) == (trainable == "lora_A")
    proc = ok(run(["--ask", str(data / "red" / "0_3.png"), "--output-dir", str(out)], tiny=False))
    table = [x for x in proc.stdout.splitlines() if x.startswith("| ") and "probability" not in x]
    assert sorted(x.split("|")[1].strip() for x in table) == ["blue", "red"]
    _check_peft_files(out, peft)


def _script():
    spec = importlib.util.spec_from_file_location("vit_classify", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_peft_files(out: Path, peft: str) -> None:
    """The adapter folder (peft's format) + trained_modules.safetensors rebuild the run's model from its base."""
    vc = _script()
    assert (out / "adapter").is_dir() == (peft == "lora")
    modules = load_file(out / vc.MODULES)
    assert any(k.startswith("head.") for k in modules) and any("running_mean" in k for k in modules)
    assert not any("lora_" in k for k in modules)
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    trained, config = vc.load_run(out)  # the whole checkpoint
    fresh, _ = vc.load_peft_run(out)  # base model + adapter + trained modules
    with torch.no_grad():
        expected = trained(pixels)
        torch.testing.assert_close(fresh(pixels), expected, rtol=0, atol=1e-6)
        vc.T.seed_everything(config["args"]["seed"])  # control: the base model alone computes something else
        base = vc.build_model(argparse.Namespace(**{**config["args"], "peft": "full"}), 2).eval()
        assert (base(pixels) - expected).abs().max() > 1e-4
        base.load_state_dict(modules, strict=False)
        assert ((base(pixels) - expected).abs().max() > 1e-4) == (peft == "lora")  # LoRA: the adapter is missing
        if peft == "lora":  # peft itself reads the adapter folder and gives the same logits
            peft_lib = pytest.importorskip("peft")
            assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
            peft_lib.PeftModel.from_pretrained(base.encoder.model, out / "adapter").eval()  # injects in place
            torch.testing.assert_close(base(pixels), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "flag"),
    [
        (["--peft", "prefix"], "--peft"),
        (["--batch-size", "0"], "--batch-size"),
        (["--image-dir", "/nonexistent/folder"], "--image-dir"),
        (["--eval-only"], "--output-dir"),
    ],
)
def test_bad_flags_exit_with_a_usage_message(bad: list[str], flag: str, tmp_path: Path) -> None:
    proc = run([*bad, "--output-dir", str(tmp_path / "none")])
    assert proc.returncode == 2 and flag in proc.stderr, proc.stderr[-1500:]
