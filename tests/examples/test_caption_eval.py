"""examples/caption_eval.py in subprocesses: the ShapesWorld example, a COCO results file, CLIPScore, bad flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from recipe_harness import ROOT, run_script

from vlblocks.metrics import caption_scores
from vlblocks.training.grid import LINE_HEIGHT

SCRIPT = ROOT / "examples" / "caption_eval.py"


def run(args: list[str]) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, args)


def test_shapes_example_scores_json_and_png(tmp_path):
    args = [
        "--shapes",
        "--num-scenes",
        "9",
        "--image-size",
        "48",
        "--show",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    proc = run(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| CIDEr |" in proc.stdout and "ShapesWorld" in proc.stdout
    report = json.loads((tmp_path / "scores.json").read_text())
    assert len(report["per_image"]) == 9 and set(report["summary"]) >= {"Bleu_4", "CIDEr", "ROUGE_L"}
    png = Image.open(tmp_path / "best_worst.png")
    assert png.size == (2 * 160, 2 * (160 + 4 * LINE_HEIGHT + 6))  # 2 best over 2 worst, 4 text lines each
    ranked = [r["CIDEr"] for r in report["per_image"]]
    assert max(ranked) > min(ranked)  # the corrupted candidates score lower than the intact ones
    again = run(args)  # the folder now holds an evaluation: refused unless --overwrite
    assert again.returncode != 0 and "--overwrite" in again.stderr
    (tmp_path / "scores.json").write_text("{}")
    assert run([*args, "--overwrite"]).returncode == 0
    assert json.loads((tmp_path / "scores.json").read_text())["summary"] == report["summary"]


def test_results_file_matches_the_library(tmp_path):
    ann = {
        "images": [
            {"id": 1, "file_name": "a.png"},
            {"id": 2, "file_name": "b.png"},
            {"id": 3, "file_name": "c.png"},
        ],
        "annotations": [
            {"image_id": 1, "caption": "A dog runs on the grass."},
            {"image_id": 1, "caption": "A brown dog running."},
            {"image_id": 2, "caption": "Two cats sleep on a sofa."},
            {"image_id": 3, "caption": "A red car."},  # not in the results: not scored
        ],
    }
    res = [{"image_id": 1, "caption": "a dog running on grass"}, {"image_id": 2, "caption": "a cat on a bed"}]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = tmp_path / "out"
    proc = run(
        [
            "--results",
            str(tmp_path / "res.json"),
            "--annotations",
            str(tmp_path / "ann.json"),
            "--output-dir",
            str(out),
            "--show",
            "1",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "scores.json").read_text())
    expected = caption_scores(
        {1: [a["caption"] for a in ann["annotations"][:2]], 2: [ann["annotations"][2]["caption"]]},
        {r["image_id"]: r["caption"] for r in res},
    )
    assert report["summary"] == pytest.approx(expected.summary(), abs=1e-12)
    assert {r["image_id"] for r in report["per_image"]} == {1, 2}


def test_clip_model_flag_adds_clipscore(tmp_path):
    import string

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = tmp_path / "clip"
    path.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,'!?-:":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    CLIPProcessor(image_processor=improc, tokenizer=tok).save_pretrained(path)
    out = tmp_path / "out"
    proc = run(
        [
            "--shapes",
            "--num-scenes",
            "6",
            "--image-size",
            "48",
            "--clip-model",
            str(path),
            "--output-dir",
            str(out),
            "--show",
            "2",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "scores.json").read_text())
    assert 0 <= report["summary"]["CLIPScore"] <= 2.5 and "RefCLIPScore" in report["summary"]
    assert all("CLIPScore" in r for r in report["per_image"]) and "ranked by CLIPScore" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "x.json"], "--results and --annotations go together"),
        (["--num-scenes", "0"], "--num-scenes must be >= 1"),
        (["--image-size", "8"], "--image-size must be in"),
        (["--results", "nope.json", "--annotations", "nope.json"], "does not exist"),
    ],
)
def test_bad_flags_fail_at_parse_time(args, message):
    proc = run(args)
    assert proc.returncode == 2 and message in proc.stderr


def _tiny_retrieval_run(folder: Path) -> None:
    """A retrieval run folder as retrieval_train.py writes it (config, tokenizer, checkpoint), random weights."""
    import argparse

    import torch

    from vlblocks.data import ShapesWorld, build_word_tokenizer
    from vlblocks.models import RetrievalPreset, build_dual_encoder
    from vlblocks.training import save_checkpoint, save_run_config

    world = ShapesWorld("val", num_scenes=20, image_size=32)
    tokenizer = build_word_tokenizer([c for caps in world.captions().references().values() for c in caps])
    preset = RetrievalPreset(image_size=32, patch_size=8, dim=16, embed_dim=8, text_depth=1, max_length=24)
    # a seed whose random embeddings have positive cosines (CLIP-S clamps negatives to 0)
    torch.manual_seed(1)
    model = build_dual_encoder(preset, tokenizer=tokenizer)
    folder.mkdir()
    save_run_config(folder, task="retrieval", args=argparse.Namespace(), model=preset.to_dict())
    tokenizer.save_pretrained(folder / "tokenizer")
    save_checkpoint(folder / "checkpoint", model=model)


def test_clip_model_flag_takes_a_retrieval_run_folder(tmp_path):
    """CLIPScore with a vlblocks dual encoder equals w * max(cos, 0) of its own embeddings, computed here."""
    import torch

    from vlblocks.data.collate import stack_images
    from vlblocks.models import load_run

    _tiny_retrieval_run(tmp_path / "retrieval")
    out = tmp_path / "out"
    args = ["--shapes", "--num-scenes", "6", "--image-size", "48", "--show", "2", "--output-dir", str(out)]
    proc = run([*args, "--clip-model", str(tmp_path / "retrieval")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "scores.json").read_text())
    assert "ranked by CLIPScore" in proc.stdout and "RefCLIPScore" in report["summary"]

    # the reference computation: the ShapesWorld example the script builds, embedded by the run's model
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from caption_eval import shapes_example
    finally:
        sys.path.pop(0)
    refs, cands, images = shapes_example(6, 48)
    model = load_run(tmp_path / "retrieval").model
    config = model.image_encoder.image_config
    ids = list(cands)
    with torch.no_grad():
        img = model.encode_image(config.normalize(stack_images([images[i] for i in ids], 32).float() / 255))
        tok = model.tokenizer(
            [cands[i] for i in ids], padding=True, truncation=True, max_length=24, return_tensors="pt"
        )
        txt = model.encode_text(tok["input_ids"], tok["attention_mask"])
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=-1)
    expected = (2.5 * cos.clamp(min=0)).tolist()
    got = {r["image_id"]: r["CLIPScore"] for r in report["per_image"]}
    assert [got[i] for i in ids] == pytest.approx(expected, abs=1e-6)
    assert max(expected) - min(expected) > 1e-4  # the images differ: a constant would not pass

    # a run folder of another task is refused with a message naming the flag
    config_path = tmp_path / "retrieval" / "run_config.json"
    config_path.write_text(config_path.read_text().replace('"retrieval"', '"vqa"'))
    bad = run([*args, "--overwrite", "--clip-model", str(tmp_path / "retrieval")])
    assert bad.returncode != 0 and "--clip-model" in bad.stderr
