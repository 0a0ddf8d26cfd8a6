"""Run flags (validated at parse time, defaults shown), run folders (never overwritten silently), run configs and
the flags a restored run keeps from the command line, the prediction grid and the caption grid."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlblocks.training import (
    RUN_CONTROL,
    RunFolderError,
    add_run_args,
    caption_grid,
    image_grid,
    is_run_dir,
    load_run_config,
    make_parser,
    prepare_run_dir,
    restore_run_args,
    save_run_config,
)


def parser() -> argparse.ArgumentParser:
    p = make_parser("doc")
    add_run_args(p, task="demo", epochs=3, batch_size=8, lr=1e-3)
    return p


def test_defaults_and_help_shows_them(capsys) -> None:
    args = parser().parse_args([])
    assert args.output_dir == Path("runs/demo") and args.epochs == 3 and args.batch_size == 8
    assert args.lr == 1e-3 and args.warmup == 0.05 and not args.resume and not args.overwrite
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "(default: 8)" in out and "(default: runs/demo)" in out


@pytest.mark.parametrize(
    ("argv", "flag", "expected"),
    [
        (["--batch-size", "0"], "--batch-size", "a positive int"),
        (["--lr", "-1e-3"], "--lr", "a positive number"),
        (["--lr=-1e-3"], "--lr", "a positive number"),
        (["--lr", "abc"], "--lr", "a positive number"),
        (["--epochs", "1.5"], "--epochs", "a positive int"),
        (["--warmup", "1"], "--warmup", r"a number in \[0, 1\)"),
        (["--weight-decay", "-0.1"], "--weight-decay", "a number >= 0"),
        (["--max-steps", "-1"], "--max-steps", "an int >= 0"),
    ],
)
def test_bad_numbers_are_usage_errors_naming_the_flag(capsys, argv, flag, expected) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err
    import re

    assert re.search(expected, err), err


def test_run_folder_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "run"
    assert prepare_run_dir(out) == out and out.is_dir() and not is_run_dir(out)
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert is_run_dir(out)
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        prepare_run_dir(out)
    assert (out / "metrics.jsonl").exists()  # nothing destroyed
    prepare_run_dir(out, resume=True)
    assert (out / "metrics.jsonl").exists()  # resume keeps the run
    (out / "checkpoint").mkdir()
    prepare_run_dir(out, overwrite=True)
    assert list(out.iterdir()) == []  # overwrite clears it
    with pytest.raises(ValueError, match="exclude each other"):
        prepare_run_dir(out, resume=True, overwrite=True)


def test_interrupted_checkpoint_save_still_counts_as_a_run(tmp_path) -> None:
    out = tmp_path / "run"
    (out / ".checkpoint.old-123").mkdir(parents=True)
    assert is_run_dir(out)


def test_run_config_round_trip(tmp_path) -> None:
    args = argparse.Namespace(output_dir=tmp_path, dim=64, name="x", layers=(1, 2))
    save_run_config(tmp_path, task="vqa", args=args, num_answers=12)
    config = load_run_config(tmp_path, task="vqa")
    assert config["args"] == {"output_dir": str(tmp_path), "dim": 64, "name": "x", "layers": [1, 2]}
    assert config["num_answers"] == 12 and config["task"] == "vqa" and "vlblocks" in config
    with pytest.raises(ValueError, match="holds a 'vqa' run, expected a 'retrieval' run"):
        load_run_config(tmp_path, task="retrieval")
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        load_run_config(tmp_path / "nothing")
    (tmp_path / "run_config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_run_config(tmp_path)
    with pytest.raises(TypeError, match="must be JSON-able"):
        save_run_config(tmp_path, task="x", args=argparse.Namespace(f=object()))


def test_image_grid_layout_and_colours() -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = torch.zeros(3, 16, 16, dtype=torch.uint8)
    blue[2] = 255
    grid = image_grid([red, blue, red], [["a", ("b", (0, 200, 0))], "c", "d"], cols=2, cell=64)
    assert grid.size == (128, 2 * (64 + 2 * 14 + 6))
    assert grid.getpixel((30, 30)) == (255, 0, 0) and grid.getpixel((64 + 30, 30)) == (0, 0, 255)
    text = np.asarray(grid.crop((0, 64, 64, 64 + 34))).reshape(-1, 3).astype(int)
    greenish = (text[:, 1] > 150) & (text[:, 0] < 60)
    assert greenish.any()  # the coloured line is drawn in its colour
    first_line = np.asarray(grid.crop((0, 64, 64, 64 + 16))).reshape(-1, 3).astype(int)
    assert not ((first_line[:, 1] > 150) & (first_line[:, 0] < 60)).any()  # control: the black line is not
    with pytest.raises(ValueError, match="texts must have one entry per image"):
        image_grid([red], [])
    with pytest.raises(TypeError, match="image tensor must be uint8"):
        image_grid([torch.zeros(3, 4, 4)], ["x"])


def test_image_grid_wraps_a_long_title_to_its_width() -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    title = "validation: true mask and each head's prediction; colour = class, dark = background"
    short = image_grid([red], ["a"], cols=1, cell=64, title="ok")
    grid = image_grid([red], ["a"], cols=1, cell=64, title=title)
    lines = (grid.height - short.height) // 14 + 1
    assert lines >= 4  # wrapped onto several lines; control: a short title keeps one
    band = np.asarray(grid.crop((0, 0, 64, 14 * lines + 8))).astype(int)
    assert (band.sum(-1) < 300).any()  # the title is drawn
    assert (band[:, -3:].sum(-1) > 600).all()  # and nothing reaches the right edge


def test_run_control_flags_come_from_the_command_line_the_rest_from_the_run(tmp_path) -> None:
    p = parser()
    p.add_argument("--width", type=int, default=8)
    dests = {a.dest for a in p._actions}
    assert set(RUN_CONTROL) <= dests and {"seed", "epochs", "lr"}.isdisjoint(RUN_CONTROL)
    trained = p.parse_args(
        ["--output-dir", str(tmp_path), "--width", "32", "--epochs", "5", "--threads", "3"]
    )
    save_run_config(tmp_path, task="demo", args=trained)
    now = p.parse_args(["--output-dir", str(tmp_path), "--eval-only", "--threads", "1", "--device", "cpu"])
    restored = restore_run_args(now, keep=RUN_CONTROL)
    assert (restored.width, restored.epochs) == (32, 5)  # what built the model: the run's own
    assert (restored.threads, restored.device, restored.eval_only) == (
        1,
        "cpu",
        True,
    )  # how to run: this call's
    assert restored.output_dir == tmp_path
    control = restore_run_args(now, keep=())
    assert (control.threads, control.eval_only) == (3, False)  # control: without keep the saved values win


def test_caption_grid_is_the_image_grid_of_prediction_and_reference() -> None:
    images = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    captions, references = ["a red square", "green", "blue"], ["one red square", "a green one", "the blue"]
    grid = caption_grid(images, captions, references, cols=2, cell=128)  # 20 characters a line: no wrapping
    lines = [[("pred: " + c, (0, 0, 160)), "ref: " + r] for c, r in zip(captions, references)]
    assert np.array_equal(np.asarray(grid), np.asarray(image_grid(images, lines, cols=2, cell=128)))
    assert grid.size == (256, 2 * (128 + 2 * 14 + 6))  # two lines under each image
    pred = np.asarray(grid.crop((0, 128, 128, 128 + 14))).reshape(-1, 3).astype(int)
    ref = np.asarray(grid.crop((0, 128 + 14, 128, 128 + 28))).reshape(-1, 3).astype(int)
    blue = lambda px: ((px[:, 2] > 100) & (px[:, 0] < 60) & (px[:, 1] < 60)).any()  # noqa: E731
    assert (
        blue(pred) and not blue(ref) and (ref.sum(-1) < 100).any()
    )  # prediction blue; control: reference black
    assert caption_grid(images[:1], captions[:1], references[:1]).size[0] == 256  # default cell 256
    with pytest.raises(ValueError, match="one entry per image"):
        caption_grid(images, captions[:2], references)
