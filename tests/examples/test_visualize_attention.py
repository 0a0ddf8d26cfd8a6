"""examples/visualize_attention.py in a subprocess on a tiny vit_classify run: every PNG is written, overlays have
the image's size, bad flags give usage errors; on tiny caption_train runs (cross and prefix mode): one panel per
generated word; and the grid-of-grids layout."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_harness import ROOT, ok, run_script

SCRIPT = ROOT / "examples" / "visualize_attention.py"


def run(script: Path, args: list[str]) -> subprocess.CompletedProcess:
    return run_script(script, ["--threads", "1", *args])


def test_pictures_of_a_run_at_the_images_size(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "vit", tmp_path / "attention"
    tiny = ["--num-scenes", "64", "--val-scenes", "16", "--dim", "32", "--depth", "3", "--heads", "2"]
    ok(run(ROOT / "examples" / "vit_classify.py", [*tiny, "--max-steps", "2", "--output-dir", str(run_dir)]))
    images = []
    for k, size in enumerate([(120, 90), (64, 200)]):
        images.append(tmp_path / f"photo{k}.png")
        Image.new("RGB", size, (30 * k, 100, 200)).save(images[-1])
    args = [
        "--run",
        str(run_dir),
        "--images",
        *map(str, images),
        "--layers",
        "0,-1",
        "--output-dir",
        str(out),
    ]
    proc = ok(run(SCRIPT, args))
    assert "layers [0, 2]" in proc.stdout
    for k, path in enumerate(images):
        size = Image.open(path).size
        assert Image.open(out / f"image{k}_rollout.png").size == size
        assert Image.open(out / f"image{k}_last_layer.png").size == size
    grid = Image.open(out / "image0_layers.png")  # a landscape image: panels as wide as 160 pixels
    assert grid.width > 4 * 160 > 2 * grid.height  # the image, 2 layers and the rollout side by side
    sim = Image.open(out / "pos_embed_similarity.png")
    assert sim.width == sim.height > 64  # 8 x 8 cells of 8 x 8 maps

    # a layer the model does not have, and a run folder that is not one
    proc = run(SCRIPT, [*args[:-1], str(tmp_path / "x"), "--layers", "0,7"])
    assert proc.returncode != 0 and "--layers" in proc.stderr, proc.stderr[-1500:]
    proc = run(SCRIPT, ["--run", str(tmp_path), "--output-dir", str(tmp_path / "y")])
    assert proc.returncode == 2 and "--run" in proc.stderr, proc.stderr[-1500:]


@pytest.mark.parametrize("mode", ["cross", "prefix"])
def test_caption_figure_has_a_panel_per_generated_word(tmp_path: Path, mode: str) -> None:
    run_dir, out = tmp_path / "caption", tmp_path / "attention"
    tiny = ["--num-scenes", "32", "--val-scenes", "2", "--image-size", "32", "--image-dim", "16"]
    tiny += ["--image-depth", "1", "--dim", "32", "--heads", "2", "--max-length", "10", "--batch-size", "16"]
    tiny += ["--eval-batch-size", "2", "--lm-steps", "1", "--epochs", "1", "--max-steps", "1", "--mode", mode]
    ok(run(ROOT / "examples" / "caption_train.py", [*tiny, "--output-dir", str(run_dir)]))
    args = ["--run", str(run_dir), "--num-images", "2", "--display-size", "64", "--output-dir", str(out)]
    proc = ok(run(SCRIPT, args))
    assert f"{mode} mode: " in proc.stdout and "decoder layers [0, 1]" in proc.stdout
    lines = re.findall(r"image (\d): (.*) \((\d+) word panels\)", proc.stdout)
    assert [int(b) for b, _, _ in lines] == [0, 1]
    for b, words, k in lines:
        k = int(k)
        assert len(words.split()) == k and 1 <= k <= 9  # up to max_length - 1 words, the end token included
        assert words.endswith("<end>") or k == 9
        panels, columns = k + 1, min(k + 1, 6)  # the image, then one 160-pixel panel per word, 6 to a row
        grid = Image.open(out / f"image{b}_caption.png")
        assert grid.size == (columns * (160 + 4) + 4, math.ceil(panels / columns) * (160 + 14 + 4) + 4)


def test_similarity_grid_places_patch_maps_row_major() -> None:
    spec = importlib.util.spec_from_file_location("visualize_attention", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sim = torch.zeros(6, 2, 3)  # 2 x 3 patches
    sim[4, 1, 1] = 1.0  # patch 4 = row 1, column 1: its own cell lights up at its own position
    picture = torch.from_numpy(np.array(module.similarity_grid(sim, cell=6, gap=2)))
    h, w, gap = 3, 2, 2  # each map upscaled to (2 * 3, 3 * 2) = (6, 6) pixels
    top, left = gap + 1 * (6 + gap), gap + 1 * (6 + gap)
    bright = picture[top + 1 * h, left + 1 * w].int()
    dark = picture[top, left].int()
    assert (bright - dark).abs().sum() > 100
    assert picture.shape == (2 * (6 + gap) + gap, 3 * (6 + gap) + gap, 3)
