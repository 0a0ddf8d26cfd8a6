"""examples/llava_caption.py in subprocesses: a tiny LLaVA saved with save_pretrained and loaded by path (captions
equal the library's, scores equal caption_scores, CLIPScore), tiny-random end to end, offline failure, bad flags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from recipe_harness import ROOT, run_script

SCRIPT = ROOT / "examples" / "llava_caption.py"
INSTRUCTIONS = ["Describe the image briefly.", "What shapes are in the picture?"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, ["--threads", "1", *args])


def shapes_references(n: int, image_size: int) -> tuple[dict, list]:
    from vlblocks.data import ShapesWorld
    from vlblocks.training import to_pil

    view = ShapesWorld("val", num_scenes=n, image_size=image_size).captions(per_image=True)
    return view.references(), [to_pil(view[k]["image"]) for k in range(n)]


@pytest.fixture(scope="module")
def tiny_llava_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlblocks.models.llava import build_tiny_llava

    refs, _ = shapes_references(20, 48)
    model, processor = build_tiny_llava([*INSTRUCTIONS, *(c for caps in refs.values() for c in caps)], seed=0)
    folder = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_saved_model_captions_and_scores_every_instruction(tmp_path, tiny_llava_folder, tiny_clip_folder):
    from vlblocks.metrics import caption_scores
    from vlblocks.models.llava import generate_captions, generation_kwargs, load_llava

    out = tmp_path / "out"
    args = ["--model", str(tiny_llava_folder), "--num-images", "4", "--image-size", "48", "--batch-size", "3"]
    args += ["--max-new-tokens", "6", "--clip-model", str(tiny_clip_folder), "--output-dir", str(out)]
    proc = run([*args, *(x for text in INSTRUCTIONS for x in ("--instruction", text))])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| instruction | CIDEr-D | BLEU-4 | CLIPScore | words |" in proc.stdout

    refs, images = shapes_references(4, 48)
    model, processor = load_llava(str(tiny_llava_folder))
    summary = json.loads((out / "summary.json").read_text())
    results = []
    for k, text in enumerate(INSTRUCTIONS):
        res = json.loads((out / f"results_{k}.json").read_text())
        assert [r["image_id"] for r in res] == list(refs)  # COCO results format, the first 4 val scenes
        expected = generate_captions(
            model, processor, images, text, generation=generation_kwargs(max_new_tokens=6)
        )
        assert [r["caption"] for r in res] == expected  # batches of 3 + 1 in the script, 4 at once here
        scores = caption_scores(refs, {r["image_id"]: r["caption"] for r in res})
        row = summary["rows"][k]
        assert row["instruction"] == text and 0 <= row["CLIPScore"] <= 2.5
        assert row["CIDEr-D"] == pytest.approx(scores.cider_d.score, abs=1e-12)
        assert row["BLEU-4"] == pytest.approx(scores.bleu.scores[3], abs=1e-12)
        results.append(res)
    assert results[0] != results[1]  # control: the instruction changes the captions
    assert json.loads((out / "instructions.json").read_text())["instructions"] == INSTRUCTIONS


def test_tiny_random_runs_end_to_end_on_shapesworld_with_sampling(tmp_path):
    out = tmp_path / "out"
    args = ["--model", "tiny-random", "--num-images", "2", "--max-new-tokens", "4", "--output-dir", str(out)]
    proc = run([*args, "--do-sample", "--temperature", "0.7", "--top-p", "0.9", "--num-beams", "2"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    gen = json.loads((out / "instructions.json").read_text())["generation"]
    assert gen == {"max_new_tokens": 4, "num_beams": 2, "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert len(rows) == 2 and "CLIPScore" not in rows[0] and (out / "prompts.md").is_file()
    from PIL import Image

    with Image.open(out / "captions.png") as png:  # 2 images, each with 2 captions and a reference
        assert png.width == 2 * 224 and png.height > 224
    again = run(args)  # an earlier run is not replaced without --overwrite
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_offline_without_weights_stops_naming_the_model_and_the_flag(tmp_path):
    proc = run(["--model", "llava-hf/llava-1.5-7b-hf", "--output-dir", str(tmp_path / "out")])
    assert proc.returncode == 1
    assert "llava-hf/llava-1.5-7b-hf is not in the local Hugging Face cache" in proc.stderr
    assert "--model" in proc.stderr and "tiny-random" in proc.stderr
    assert not (tmp_path / "out").exists()  # stopped before any work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["--temperature", "0"], "expected a positive number"),
        (["--data", "coco"], "--data coco needs --image-dir"),
        (["--instruction", " "], "--instruction must not be empty"),
    ],
)
def test_bad_flags_fail_at_parse_time(args, message):
    proc = run(args)
    assert proc.returncode == 2 and message in proc.stderr
