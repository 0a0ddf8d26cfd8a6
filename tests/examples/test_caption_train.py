"""examples/caption_train.py and examples/caption_decode.py in subprocesses: a short run and its folder (trained
weights only, peft adapter file, COCO predictions that caption_eval.py reads), the adapter file reloading into a
fresh model with the same captions, --eval-only / --ask / --resume, --compare, the learning check against the
untrained model, and the decoding table (seeded, greedy row equal to training's evaluation)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from recipe_harness import ROOT, ok, rows, run_script
from safetensors import safe_open

from vlblocks.data import ShapesWorld

TRAIN, DECODE, EVAL = (ROOT / "examples" / f"caption_{s}.py" for s in ("train", "decode", "eval"))
TINY = [
    "--num-scenes",
    "128",
    "--val-scenes",
    "24",
    "--image-size",
    "32",
    "--image-dim",
    "16",
    "--image-depth",
    "1",
    "--dim",
    "32",
    "--heads",
    "2",
    "--max-length",
    "40",
    "--batch-size",
    "32",
    "--eval-batch-size",
    "12",
    "--lm-steps",
    "20",
    "--epochs",
    "2",
    "--lr",
    "3e-3",
]


def run(script: Path, args: list[str], *, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_script(script, args, timeout=timeout)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caption") / "run"
    ok(run(TRAIN, [*TINY, "--threads", "1", "--output-dir", str(out)]))
    return out


def test_short_run_writes_the_run_folder(short_run: Path) -> None:
    assert [r["epoch"] for r in rows(short_run)] == [1, 2]
    assert {"loss", "BLEU-4", "CIDEr-D", "ROUGE-L", "train_s"} <= rows(short_run)[-1].keys()
    config = json.loads((short_run / "run_config.json").read_text())
    assert (
        config["task"] == "caption"
        and config["model"]["peft"] == "lora"
        and config["model"]["mode"] == "cross"
    )
    adapter = json.loads((short_run / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 16
    assert sorted({t.rsplit(".", 1)[-1] for t in adapter["target_modules"]}) == ["c_attn", "c_fc", "c_proj"]
    with safe_open(str(short_run / "checkpoint" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "projector.weight" in keys and "decoder.transformer.h.0.crossattention.c_attn.weight" in keys
    frozen = (
        "decoder.transformer.wte.weight",
        "decoder.transformer.h.0.attn.c_attn.weight",
        "decoder.lm_head.weight",
    )
    assert not keys & set(frozen) and not any("lora_" in k for k in keys)  # trained non-LoRA weights only
    predictions = json.loads((short_run / "predictions_val.json").read_text())
    assert len(predictions) == 24 and set(predictions[0]) == {"image_id", "caption"}
    assert (short_run / "captions.png").stat().st_size > 5000 and (
        short_run / "lm" / "model.safetensors"
    ).is_file()


def test_predictions_are_read_by_caption_eval(short_run: Path, tmp_path: Path) -> None:
    refs = ShapesWorld("val", num_scenes=24, image_size=32).captions(per_image=True).references()
    annotations = {
        "images": [{"id": i, "file_name": f"{i}.png"} for i in refs],
        "annotations": [
            {"id": k, "image_id": i, "caption": c}
            for k, (i, c) in enumerate((i, c) for i, cs in refs.items() for c in cs)
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    args = ["--results", str(short_run / "predictions_val.json"), "--annotations", str(tmp_path / "ann.json")]
    ok(run(EVAL, [*args, "--output-dir", str(tmp_path / "eval")]))
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    cider = next(v for k, v in _flat(summary) if k in ("CIDEr", "CIDEr-D"))
    assert cider == pytest.approx(rows(short_run)[-1]["CIDEr-D"], abs=1e-9)


def _flat(obj, key=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, k)
    else:
        yield key, obj


def test_adapter_file_reloads_into_a_fresh_model_with_the_same_captions(short_run: Path) -> None:
    from vlblocks.data.caption_batch import tidy_caption
    from vlblocks.models import load_run

    loaded = load_run(short_run)  # a fresh model + the cached LM + checkpoint/ + adapter/
    lora_b = loaded.model.decoder.transformer.h[0].attn.c_attn.lora_B
    assert lora_b.abs().sum() > 0  # the adapter file's trained LoRA weights, not the zero init
    world = ShapesWorld("val", num_scenes=24, image_size=32)
    config = loaded.model.image_encoder.image_config
    pixels = config.normalize(world.images.float() / 255)
    with torch.no_grad():
        captions = [tidy_caption(c) for c in loaded.model.generate(pixels, max_new_tokens=39)]
    saved = [r["caption"] for r in json.loads((short_run / "predictions_val.json").read_text())]
    assert captions == saved


def test_eval_only_and_ask_use_the_folder_alone(short_run: Path, tmp_path: Path) -> None:
    proc = ok(run(TRAIN, ["--eval-only", "--threads", "1", "--output-dir", str(short_run)]))
    assert f"CIDEr-D {rows(short_run)[-1]['CIDEr-D']:.3f}" in proc.stdout
    world = ShapesWorld("val", num_scenes=1, image_size=32)
    world.scene(0).image.save(tmp_path / "scene.png")
    proc = ok(run(TRAIN, ["--ask", str(tmp_path / "scene.png"), "--output-dir", str(short_run)]))
    first = json.loads((short_run / "predictions_val.json").read_text())[0]["caption"]
    assert proc.stdout.strip().splitlines()[-1] == first
    proc = run(TRAIN, ["--eval-only", "--output-dir", str(tmp_path / "none")])
    assert proc.returncode == 2 and "holds no run to load" in proc.stderr


def test_a_run_saved_before_stem_existed_resumes_as_patchify(tmp_path: Path) -> None:
    """A run folder written before --stem (no "stem" in run_config.json) holds a patchify ViT: --resume rebuilds
    and continues it, though the flag's default is now the conv stem."""
    out = tmp_path / "old"
    args = [*TINY, "--num-scenes", "64", "--val-scenes", "12", "--threads", "1"]  # 2 epochs of 2 steps
    ok(run(TRAIN, [*args, "--stem", "patch", "--stop-after", "3", "--output-dir", str(out)]))
    config = json.loads((out / "run_config.json").read_text())
    del config["args"]["stem"], config["model"]["stem"]
    (out / "run_config.json").write_text(json.dumps(config))
    proc = ok(run(TRAIN, ["--resume", "--threads", "1", "--output-dir", str(out)]))
    assert "resumed from" in proc.stdout and rows(out)[-1]["epoch"] == 2
    assert json.loads((out / "run_config.json").read_text())["model"]["stem"] == "patch"


def test_resume_continues_to_the_same_result(short_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    ok(run(TRAIN, [*TINY, "--threads", "1", "--output-dir", str(out), "--stop-after", "5"]))
    assert rows(out)[-1]["epoch"] == 1  # stopped in epoch 2 (4 steps per epoch)
    proc = ok(run(TRAIN, ["--resume", "--threads", "1", "--output-dir", str(out)]))
    assert "resumed from" in proc.stdout and "reusing" in proc.stdout
    assert rows(out)[-1]["CIDEr-D"] == pytest.approx(rows(short_run)[-1]["CIDEr-D"], abs=1e-6)
    proc = run(TRAIN, [*TINY, "--output-dir", str(out)])
    assert (
        proc.returncode != 0 and "--resume" in proc.stdout + proc.stderr
    )  # a run folder is never overwritten


def test_compare_trains_every_method(tmp_path: Path) -> None:
    args = [*TINY, "--epochs", "1", "--num-scenes", "64", "--val-scenes", "12", "--threads", "1"]
    proc = ok(run(TRAIN, [*args, "--compare", "--mode", "prefix", "--output-dir", str(tmp_path)]))
    table = json.loads((tmp_path / "compare.json").read_text())
    assert [r["method"] for r in table] == ["full", "LoRA r=8", "LoRA r=16", "adapter", "soft prompt"]
    count = {r["method"]: r["trainable"] for r in table}
    assert all(0 < r["CPU s/epoch"] <= 1.5 * r["s/epoch"] for r in table)  # one thread: CPU time <= wall
    assert count["full"] > count["LoRA r=16"] > count["LoRA r=8"] > count["soft prompt"]
    assert count["LoRA r=16"] - count["LoRA r=8"] == 2 * 8 * 16 * 32  # 2 blocks, 8 more ranks of 16 D, D = 32
    assert (
        "PEFT comparison, prefix mode" in proc.stdout and proc.stdout.count("pretraining on") == 1
    )  # LM shared


def test_default_configuration_learns(tmp_path: Path) -> None:
    """A short run of the default configuration (sizes, LM pretraining, LoRA r=16, cross mode) beats the untrained
    captioner (the pretrained LM's one generic caption for every image)."""
    from transformers import AutoTokenizer

    from vlblocks.metrics import cider_d
    from vlblocks.models.caption_preset import CaptionPreset, apply_caption_peft, build_captioner

    out = tmp_path / "learn"  # the default model and LM pretraining; 3 epochs of 2,000 scenes (186 steps)
    args = ["--epochs", "3", "--num-scenes", "2000", "--val-scenes", "100", "--threads", "1"]
    ok(run(TRAIN, [*args, "--output-dir", str(out)], timeout=900))
    trained = rows(out)[-1]["CIDEr-D"]
    config = json.loads((out / "run_config.json").read_text())
    from safetensors.torch import load_file

    preset = CaptionPreset.from_dict(config["model"])
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    torch.manual_seed(0)
    model = build_captioner(preset, tokenizer=tok, lm_state=load_file(str(out / "lm" / "model.safetensors")))
    apply_caption_peft(model, preset)
    view = ShapesWorld("val", num_scenes=100, image_size=64).captions(per_image=True)
    pixels = model.image_encoder.image_config.normalize(view.world.images.float() / 255)
    with torch.no_grad():
        captions = model.eval().generate(pixels, max_new_tokens=47)
    refs = view.references()
    untrained = cider_d(refs, dict(zip(refs, captions))).score
    assert len(set(captions)) == 1  # untrained: the LM's one generic caption, whatever the image
    assert trained > untrained + 0.3, (trained, untrained)  # measured: 0.824 against about 0.44


def test_decoding_table_is_seeded_and_its_greedy_row_is_training_evaluation(
    short_run: Path, tmp_path: Path
) -> None:
    rows_args = [
        "--row",
        "greedy",
        "--row",
        "top_k=5,temperature=0.7",
        "--threads",
        "1",
        "--run",
        str(short_run),
    ]
    ok(run(DECODE, [*rows_args, "--output", str(tmp_path / "a")]))
    ok(run(DECODE, [*rows_args, "--output", str(tmp_path / "b")]))
    a, b = (json.loads((tmp_path / x / "decoding.json").read_text()) for x in "ab")
    assert a["rows"] == b["rows"] and a["examples"] == b["examples"]  # sampled rows are reproducible
    assert a["rows"][0]["CIDEr-D"] == pytest.approx(rows(short_run)[-1]["CIDEr-D"], abs=1e-9)
    assert "| decoding | BLEU-4 (%) | CIDEr-D |" in (tmp_path / "a" / "decoding.md").read_text()
    other = ok(run(DECODE, [*rows_args, "--seed", "3", "--output", str(tmp_path / "c")]))
    c = json.loads((tmp_path / "c" / "decoding.json").read_text())
    assert c["examples"]["greedy"] == a["examples"]["greedy"] and "written" in other.stdout


def test_decoding_table_default_rows_and_errors(short_run: Path, tmp_path: Path) -> None:
    ok(
        run(
            DECODE,
            ["--run", str(short_run), "--val-scenes", "6", "--threads", "1", "--output", str(tmp_path)],
        )
    )
    table = json.loads((tmp_path / "decoding.json").read_text())
    names = [r["decoding"] for r in table["rows"]]
    assert names[:3] == ["greedy", "beam 3", "beam 5"] and len(names) == 11
    assert all(c.startswith("a picture of") for c in table["examples"]["greedy + prompt"])
    proc = run(DECODE, ["--run", str(tmp_path / "missing")])
    assert proc.returncode == 2 and "python examples/caption_train.py --output-dir" in proc.stderr
    proc = run(DECODE, ["--run", str(short_run), "--row", "top_q=3"])
    assert proc.returncode == 2 and "NAME=VALUE with NAME in" in proc.stderr


def test_coco_layout_from_shapesworld_export(tmp_path: Path) -> None:
    """--data coco reads the COCO captions layout (here ShapesWorld.export()'s); each step takes a random reference."""
    for split, n in (("train", 64), ("val", 12)):
        ShapesWorld(split, num_scenes=n, image_size=32).export(tmp_path / "coco")
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "1", "--val-scenes", "12", "--threads", "1"]
    ok(run(TRAIN, [*args, "--data", "coco", "--data-root", str(tmp_path / "coco"), "--output-dir", str(out)]))
    predictions = json.loads((out / "predictions_val.json").read_text())
    assert len(predictions) == 12 and rows(out)[-1]["epoch"] == 1
    proc = run(
        TRAIN, ["--data", "coco", "--data-root", str(tmp_path / "missing"), "--output-dir", str(out / "x")]
    )
    assert proc.returncode != 0 and "--data-root" in proc.stdout + proc.stderr


def test_clip_score_with_a_local_clip_folder(tmp_path: Path, tiny_clip_folder: Path) -> None:
    args = [*TINY, "--epochs", "1", "--num-scenes", "64", "--val-scenes", "12", "--threads", "1"]
    ok(run(TRAIN, [*args, "--clip-model", str(tiny_clip_folder), "--output-dir", str(tmp_path / "run")]))
    score = rows(tmp_path / "run")[-1]["CLIPScore"]
    assert 0 <= score <= 2.5  # CLIPScore = 2.5 max(cos, 0)
