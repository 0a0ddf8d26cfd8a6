"""examples/clip_zero_shot.py end to end in subprocesses: a retrieval run folder on ShapesWorld's classification
view, an HF CLIP folder on an image folder, repeatable templates, the written table / JSON / PNG, flag validation."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from recipe_harness import ROOT, ok, run_script

SCRIPT = ROOT / "examples" / "clip_zero_shot.py"
TRAIN = ROOT / "examples" / "retrieval_train.py"


def run(args: list[str], *, script: Path = SCRIPT, timeout: int = 240) -> subprocess.CompletedProcess:
    return run_script(script, ["--threads", "1", *args], timeout=timeout)


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zs") / "retrieval"
    tiny = [
        "--num-scenes",
        "48",
        "--val-scenes",
        "20",
        "--image-size",
        "32",
        "--dim",
        "16",
        "--embed-dim",
        "16",
    ]
    ok(
        run(
            [*tiny, "--text-depth", "1", "--batch-size", "16", "--max-steps", "2", "--output-dir", str(out)],
            script=TRAIN,
        )
    )
    return out


def test_retrieval_run_on_shapes_with_templates(tmp_path: Path, retrieval_run: Path) -> None:
    out = tmp_path / "zs"
    templates = ["a {} in the center of the image", "a small {}"]
    flags = [
        "--template",
        templates[0],
        "--template",
        templates[1],
        "--num-scenes",
        "30",
        "--image-size",
        "32",
    ]
    proc = ok(run(["--model", str(retrieval_run), *flags, "--output-dir", str(out)]))
    assert "circle, square, triangle" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert list(result["per_template"]) == templates and result["images"] == 30
    assert result["max_objects"] == 1 and "label = the object's shape" in proc.stdout  # single-object scenes
    assert 0 <= result["ensemble"] <= 1 and result["classes"] == ["circle", "square", "triangle"]
    table = (out / "results.md").read_text()
    assert all(t in table for t in templates) and "ensemble of 2" in table
    assert (out / "confusion.png").stat().st_size > 500


def test_hf_clip_on_an_image_folder_matches_the_classifier(tmp_path: Path, tiny_clip_folder: Path) -> None:
    """The script's ensemble accuracy equals ZeroShotClassifier's on the same HF CLIP and images in-process."""
    from PIL import Image

    from vlblocks.data import ShapesWorld
    from vlblocks.models import DualEncoder, ZeroShotClassifier

    world = ShapesWorld("val", num_scenes=12, image_size=32, seed=1)
    view = world.classification()
    folder = tmp_path / "images"
    for i in range(len(view)):
        name = view.class_names[view[i]["label"]]
        (folder / f"{name}_shape").mkdir(parents=True, exist_ok=True)
        Image.fromarray(view[i]["image"].permute(1, 2, 0).numpy()).save(
            folder / f"{name}_shape" / f"{i:03d}.png"
        )
    out = tmp_path / "zs"
    flags = ["--image-dir", str(folder), "--template", "a photo of a {}", "--template", "a {} in the center"]
    proc = ok(run(["--model", str(tiny_clip_folder), *flags, "--output-dir", str(out)]))
    result = json.loads((out / "results.json").read_text())
    names = sorted({f"{view.class_names[view[i]['label']]} shape" for i in range(len(view))})
    assert result["classes"] == names and "majority class" in proc.stdout

    model = DualEncoder.from_pretrained(tiny_clip_folder).eval()
    classifier = ZeroShotClassifier(model, names, templates=["a photo of a {}", "a {} in the center"])
    paths = sorted(folder.glob("*/*.png"))
    labels = torch.tensor([names.index(p.parent.name.replace("_", " ")) for p in paths])
    pixels = torch.stack([view[int(p.stem)]["image"] for p in paths]).float() / 255
    expected = classifier.evaluate([(model.image_encoder.image_config.normalize(pixels), labels)])
    assert result["ensemble"] == pytest.approx(expected.accuracy, abs=1e-9)
    assert result["per_template"] == pytest.approx(expected.per_template, abs=1e-9)


@pytest.mark.parametrize(
    ("bad", "flag"),
    [
        (["--template", "a photo"], "--template"),
        (["--image-dir", "/nonexistent/folder"], "--image-dir"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_flags_exit_with_a_usage_message(bad: list[str], flag: str) -> None:
    proc = run(bad)
    assert proc.returncode == 2 and flag in proc.stderr, proc.stderr[-1500:]


def test_a_model_that_is_neither_a_run_nor_a_clip_is_refused(tmp_path: Path) -> None:
    proc = run(["--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "zs")])
    assert proc.returncode == 1 and "--model" in proc.stderr, proc.stderr[-1500:]
