"""Checkpoints: bitwise resume, atomic replacement, tied weights, no pickle, clear errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import vlblocks.training.checkpoint as ckpt
from vlblocks.training import has_checkpoint, load_checkpoint, read_checkpoint_state, save_checkpoint


def make_run(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train_step(model, opt, sched) -> None:
    x = torch.randn(4, 8)  # uses the global torch RNG, so its state must be restored too
    loss = model(x).pow(2).mean() + 0.01 * random.random() + 0.01 * float(np.random.rand())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def snapshot(model, opt) -> dict[str, torch.Tensor]:
    out = {f"p.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        out.update({f"o.{i}.{k}": v.clone() for k, v in st.items()})
    out["draw_torch"] = torch.rand(3)
    out["draw_py"] = torch.tensor(random.random(), dtype=torch.float64)
    out["draw_np"] = torch.tensor(np.random.rand(), dtype=torch.float64)
    return out


def test_resume_is_bitwise_identical(tmp_path) -> None:
    folder = tmp_path / "ckpt"
    random.seed(1)
    np.random.seed(1)
    model, opt, sched = make_run(0)
    for _ in range(3):
        train_step(model, opt, sched)
    state = {"step": 3, "epoch": 1, "best": float("-inf"), "tag": "run-a"}
    save_checkpoint(folder, model=model, optimizer=opt, scheduler=sched, state=state)
    for _ in range(2):
        train_step(model, opt, sched)
    expected = snapshot(model, opt)
    lr_expected = sched.get_last_lr()

    random.seed(99)
    np.random.seed(99)
    model2, opt2, sched2 = make_run(123)  # different init, fresh optimizer state, other RNG states
    loaded = load_checkpoint(folder, model=model2, optimizer=opt2, scheduler=sched2)
    assert loaded == state
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)  # tuples come back as tuples
    for _ in range(2):
        train_step(model2, opt2, sched2)
    got = snapshot(model2, opt2)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert sched2.get_last_lr() == lr_expected


def test_files_are_safetensors_and_json_only(tmp_path) -> None:
    model, opt, sched = make_run(0)
    train_step(model, opt, sched)
    folder = save_checkpoint(tmp_path / "c", model=model, optimizer=opt, scheduler=sched, state={"step": 1})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json"]
    for p in folder.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), f"{p.name} looks like a pickle"
    opt_keys = set(load_file(str(folder / "optimizer.safetensors")))
    assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step", "state.3.exp_avg"} <= opt_keys
    rng = load_file(str(folder / "rng.safetensors"))
    assert rng["torch_cpu"].dtype == torch.uint8
    meta = json.loads((folder / "trainer_state.json").read_text())
    assert meta["state"] == {"step": 1} and meta["scheduler"]["last_epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary folder left


def test_state_with_tensors_tuples_and_int_keys(tmp_path) -> None:
    model = nn.Linear(2, 2)
    state = {
        "step": 7,
        "loss_ema": torch.tensor([0.5, 0.25]),
        "confusion": np.arange(6, dtype=np.int64).reshape(2, 3),
        "pair": (1, "a"),
        "per_class": {0: 0.5, 3: 0.75},
        "nested": [{"x": torch.tensor(1.5)}],
        "np_scalar": np.float32(2.5),
    }
    save_checkpoint(tmp_path / "c", model=model, state=state)
    out = load_checkpoint(tmp_path / "c", model=nn.Linear(2, 2))
    assert out["step"] == 7 and out["pair"] == (1, "a") and out["per_class"] == {0: 0.5, 3: 0.75}
    assert torch.equal(out["loss_ema"], state["loss_ema"])
    assert isinstance(out["confusion"], np.ndarray) and np.array_equal(out["confusion"], state["confusion"])
    assert torch.equal(out["nested"][0]["x"], torch.tensor(1.5)) and out["np_scalar"] == 2.5
    assert (tmp_path / "c" / "extra.safetensors").is_file()


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "ckpt"
    model, opt, sched = make_run(0)
    save_checkpoint(folder, model=model, optimizer=opt, state={"step": 1})
    old_weight = model[0].weight.detach().clone()
    train_step(model, opt, sched)

    real_save_file = ckpt.save_file
    calls = []

    def failing_save_file(*args, **kwargs):
        calls.append(1)
        real_save_file(*args, **kwargs)  # the optimizer file is written, then the "crash"
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "save_file", failing_save_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(folder, model=model, optimizer=opt, state={"step": 2})
    assert calls
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no partial folder anywhere
    fresh, fresh_opt, _ = make_run(5)
    assert load_checkpoint(folder, model=fresh, optimizer=fresh_opt) == {"step": 1}
    assert torch.equal(fresh[0].weight, old_weight)


def test_crash_between_renames_is_recovered(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "ckpt"
    model = nn.Linear(3, 3)
    save_checkpoint(folder, model=model, state={"step": 1})
    real_rename = ckpt.os.rename
    calls = []

    def rename_then_crash(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old folder renamed aside, new one not yet in place
            raise OSError("power cut (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", rename_then_crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(folder, model=model, state={"step": 2})
    monkeypatch.undo()
    assert not folder.exists() and has_checkpoint(folder)  # folder.exists() is not the resume check
    assert load_checkpoint(folder, model=nn.Linear(3, 3)) == {"step": 1}  # reads the kept-aside one
    assert read_checkpoint_state(folder) == {"step": 1}
    save_checkpoint(folder, model=model, state={"step": 3})  # repairs, cleans, then replaces
    assert load_checkpoint(folder, model=nn.Linear(3, 3)) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_tied_weights_gpt2(tmp_path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    folder = save_checkpoint(tmp_path / "gpt2", model=model)
    stored = load_file(str(folder / "model.safetensors"))
    assert ("lm_head.weight" in stored) != ("transformer.wte.weight" in stored)  # stored once

    torch.manual_seed(1)
    other = GPT2LMHeadModel(cfg).eval()
    load_checkpoint(folder, model=other)
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()  # still tied
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        assert torch.equal(other(ids).logits, model(ids).logits)


def test_wrapped_model_saves_plain_keys(tmp_path) -> None:
    model = nn.Linear(4, 2)
    save_checkpoint(tmp_path / "c", model=nn.DataParallel(model))
    assert set(load_file(str(tmp_path / "c" / "model.safetensors"))) == {"weight", "bias"}
    plain = nn.Linear(4, 2)
    load_checkpoint(tmp_path / "c", model=plain, restore_rng=False)
    assert torch.equal(plain.weight, model.weight)


def test_restore_rng_false_leaves_rng_alone(tmp_path) -> None:
    save_checkpoint(tmp_path / "c", model=nn.Linear(2, 2))
    target = nn.Linear(2, 2)
    torch.manual_seed(42)
    expected = torch.rand(2)
    torch.manual_seed(42)
    load_checkpoint(tmp_path / "c", model=target, restore_rng=False)
    assert torch.equal(torch.rand(2), expected)


def test_errors(tmp_path) -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope", model=model)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="incomplete checkpoint"):
        load_checkpoint(tmp_path / "partial", model=model)
    folder = save_checkpoint(tmp_path / "c", model=model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(folder, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no scheduler state"):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        save_checkpoint(tmp_path / "o", model=model, optimizer=opt)
        load_checkpoint(tmp_path / "o", model=model, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))
    (folder / "rng.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing files"):
        load_checkpoint(folder, model=model)
    with pytest.raises(
        ValueError, match=r"does not fit Sequential \(strict=True\): missing keys \['0.weight'"
    ):
        save_checkpoint(tmp_path / "d", model=nn.Linear(2, 2))
        load_checkpoint(tmp_path / "d", model=nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="cannot store object"):
        save_checkpoint(tmp_path / "e", model=model, state={"bad": object()})
    assert not (tmp_path / "e").exists()
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        save_checkpoint(tmp_path / "f", model={"weight": torch.zeros(1)})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="state must be a dict"):
        save_checkpoint(tmp_path / "f", model=model, state=[1])  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        save_checkpoint(tmp_path / "file", model=model)


def test_has_checkpoint(tmp_path) -> None:
    assert not has_checkpoint(tmp_path / "c")
    (tmp_path / "c").mkdir()
    assert not has_checkpoint(tmp_path / "c")  # empty folder
    save_checkpoint(tmp_path / "c", model=nn.Linear(2, 2), state={"step": 4})
    assert has_checkpoint(tmp_path / "c") and has_checkpoint(str(tmp_path / "c"))
    assert read_checkpoint_state(tmp_path / "c") == {"step": 4}
    (tmp_path / "c" / "rng.safetensors").write_bytes(b"\x10\x00")  # truncated: load_checkpoint would fail
    assert not has_checkpoint(tmp_path / "c")
    with pytest.raises(ValueError, match=r"rng.safetensors is not a valid safetensors file: 2 bytes"):
        load_checkpoint(tmp_path / "c", model=nn.Linear(2, 2))
