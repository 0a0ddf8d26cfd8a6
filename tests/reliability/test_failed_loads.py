"""A failed load changes nothing, and its error names the file (issue 7, items 11, 12 and 13).

For every way an adapter or checkpoint folder can be wrong, ``load_adapter`` / ``load_checkpoint`` must raise a
clear error and leave the model exactly as before: the same module tree (names and classes), the same forward hooks,
every tensor equal (and, for checkpoints, the optimizer, the scheduler and the global RNG too); a retry with the
right folder then works.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlblocks.peft import apply_adapters, apply_lora, load_adapter, lora_layers, save_adapter
from vlblocks.training import load_checkpoint, save_checkpoint

# ---------------------------------------------------------------- adapters


def base() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8), nn.Linear(8, 3))


def trained(r: int = 4) -> nn.Module:
    model = base()
    apply_lora(model, ["0", "2"], r=r, alpha=8)
    apply_adapters(model, "3", bottleneck=2)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_()
        model[3].adapter.up.weight.normal_()
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "tree": [(name, type(m).__name__) for name, m in model.named_modules()],
        "hooks": [
            (name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()
        ],
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "params": [name for name, _ in model.named_parameters()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["tree"] == before["tree"]
    assert after["hooks"] == before["hooks"]
    assert after["params"] == before["params"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), k


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    entries = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            entries[0].pop(key)
        else:
            entries[0][key] = value
    path.write_text(json.dumps(entries))


def _edit_weights(folder: Path, edit) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def _first_key(tensors: dict, part: str) -> str:
    return sorted(k for k in tensors if part in k)[0]


def _truncate(folder: Path, name: str, keep: float) -> None:
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


BAD_ADAPTERS = {
    "wrong r in config": (lambda f: _edit_config(f, r=2), ValueError, "shape mismatch|says r=2, alpha=8"),
    "other alpha in config": (
        lambda f: _edit_config(f, lora_alpha=16),
        ValueError,
        r"LoRA layer '0' has r=4, alpha=8, .*adapter_config.json says r=4, alpha=16",
    ),
    "config without r": (
        lambda f: _edit_config(f, r=None),
        ValueError,
        r"adapter_config.json \(entry 0\).*needs 'r'",
    ),
    "r is a string": (
        lambda f: _edit_config(f, r="4"),
        ValueError,
        r"adapter_config.json.*'r', a positive int",
    ),
    "targets match nothing": (lambda f: _edit_config(f, target_modules=["nope"]), ValueError, "matched no"),
    "missing key": (
        lambda f: _edit_weights(f, lambda t: t.pop(_first_key(t, "lora_B"))),
        ValueError,
        "missing keys",
    ),
    "extra key": (
        lambda f: _edit_weights(f, lambda t: t.update(extra=torch.zeros(2))),
        ValueError,
        "unexpected keys",
    ),
    "wrong shape": (
        lambda f: _edit_weights(f, lambda t: t.update({_first_key(t, "lora_A"): torch.zeros(4, 5)})),
        ValueError,
        r"shape mismatch.*expected \(4, 4\), found \(4, 5\)",
    ),
    "adapter shape wrong (2nd entry)": (
        lambda f: _edit_weights(f, lambda t: t.update({_first_key(t, "up.weight"): torch.zeros(3, 3)})),
        ValueError,
        "shape mismatch",
    ),
    "integer weights": (
        lambda f: _edit_weights(f, lambda t: t.update({k: v.long() for k, v in t.items()})),
        ValueError,
        "not floating point",
    ),
    "truncated weights": (
        lambda f: _truncate(f, "adapter_model.safetensors", 0.6),
        ValueError,
        r"adapter_model.safetensors is not a valid safetensors file.*truncated",
    ),
    "empty weights": (
        lambda f: _truncate(f, "adapter_model.safetensors", 0),
        ValueError,
        r"adapter_model.safetensors is not a valid safetensors file: 0 bytes",
    ),
    "pickle weights": (
        lambda f: torch.save({"x": torch.zeros(2)}, f / "adapter_model.safetensors"),
        ValueError,
        "torch.save / pickle",
    ),
    "symlink to a text file": (
        lambda f: _symlink(f, "adapter_model.safetensors", "notes.txt", b"hello world, not weights\n" * 3),
        ValueError,
        "adapter_model.safetensors is not a valid safetensors file",
    ),
    "truncated config": (
        lambda f: _truncate(f, "adapter_config.json", 0.5),
        ValueError,
        r"adapter_config.json is not valid JSON \(.*line",
    ),
    "empty config": (
        lambda f: _truncate(f, "adapter_config.json", 0),
        ValueError,
        "adapter_config.json is empty",
    ),
    "non-UTF-8 config": (
        lambda f: (f / "adapter_config.json").write_bytes(b'{"r": "\xff"}'),
        ValueError,
        "adapter_config.json is not UTF-8",
    ),
    "config is a number": (
        lambda f: (f / "adapter_config.json").write_text("3"),
        ValueError,
        "unsupported peft_type None",
    ),
    "missing weights": (
        lambda f: (f / "adapter_model.safetensors").unlink(),
        FileNotFoundError,
        "adapter_model.safetensors not found",
    ),
}


def _symlink(folder: Path, name: str, target: str, content: bytes) -> None:
    (folder.parent / target).write_bytes(content)
    (folder / name).unlink()
    (folder / name).symlink_to(folder.parent / target)


# target_modules are read only to apply LoRA to a model without any; a model with LoRA already has its own alpha
ONLY_FRESH, ONLY_WITH_LORA = {"targets match nothing"}, {"other alpha in config"}
ADAPTER_CASES = [
    (start, case)
    for start in ("fresh", "with-lora")
    for case in BAD_ADAPTERS
    if case not in (ONLY_WITH_LORA if start == "fresh" else ONLY_FRESH)
]


@pytest.mark.parametrize(("start", "case"), ADAPTER_CASES)
def test_failed_load_adapter_changes_nothing(tmp_path, case, start) -> None:
    good = save_adapter(trained(), tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    spoil, error, message = BAD_ADAPTERS[case]
    spoil(bad)
    model = base() if start == "fresh" else trained()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        load_adapter(model, bad)
    assert_same(before, snapshot(model))
    load_adapter(model, good)  # the retry works
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(model(x), trained()(x))
        assert not torch.equal(model(x), base()(x))  # control: the adapter changes the output


def test_snapshot_sees_an_injection() -> None:
    """Control for the test above: a load that changes the model is seen by ``assert_same``."""
    model = base()
    before = snapshot(model)
    apply_lora(model, "0", r=2)
    with pytest.raises(AssertionError):
        assert_same(before, snapshot(model))
    model = trained()
    before = snapshot(model)
    with torch.no_grad():
        model[0].lora_A[0, 0] += 1
    with pytest.raises(AssertionError):
        assert_same(before, snapshot(model))


# ---------------------------------------------------------------- checkpoints


def run(width: int = 8, *, scheduler: str = "step"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.Linear(width, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = (
        torch.optim.lr_scheduler.StepLR(opt, 2)
        if scheduler == "step"
        else torch.optim.lr_scheduler.CosineAnnealingLR(opt, 5)
    )
    sched.step()
    return model, opt, sched


def full_state(model, opt, sched) -> dict:
    out = {f"m.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        out.update({f"o.{i}.{k}": v.clone() for k, v in st.items()})
    out["groups"] = json.dumps(opt.state_dict()["param_groups"], default=str)
    out["sched"] = json.dumps(sched.state_dict(), default=str)
    out["rng"] = (
        torch.get_rng_state().clone(),
        random.getstate(),
        str(np.random.get_state(legacy=True)[1][:4]),
    )
    return out


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif k == "rng":
            assert torch.equal(a[k][0], b[k][0]) and a[k][1:] == b[k][1:]
        else:
            assert a[k] == b[k], k


def _edit_meta(folder: Path, edit) -> None:
    path = folder / "trainer_state.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _other_run(**kw):
    def make():
        return run(**kw)

    return make


def _reversed_optimizer():
    model, _, sched = run()
    params = list(model.parameters())[::-1]  # same count, other order: every moment has the wrong shape
    opt = torch.optim.AdamW(params, lr=1e-2)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, 2)


BAD_CHECKPOINTS = {
    # name: (how the checkpoint is saved / spoiled, objects to load into, load kwargs, error, message)
    "optimizer not saved": ("no-opt", run, {}, ValueError, "has no optimizer state"),
    "scheduler not saved": ("no-sched", run, {}, ValueError, "has no scheduler state"),
    "shape mismatch": (
        "full",
        _other_run(width=6),
        {},
        ValueError,
        r"does not fit the model: shape mismatch",
    ),
    "shape mismatch, strict=False": (
        "full",
        _other_run(width=6),
        {"strict": False},
        ValueError,
        "shape mismatch",
    ),
    "optimizer state shapes": ("full", _reversed_optimizer, {}, ValueError, r"optimizer state 'exp_avg'"),
    "other scheduler": ("full", _other_run(scheduler="cos"), {}, ValueError, "a different kind of scheduler"),
    "truncated model file": (
        "trunc-model",
        run,
        {},
        ValueError,
        r"model.safetensors is not a valid safetensors",
    ),
    "truncated optimizer file": ("trunc-opt", run, {}, ValueError, r"optimizer.safetensors is not a valid"),
    "malformed trainer_state.json": (
        "bad-json",
        run,
        {},
        ValueError,
        r"trainer_state.json is not valid JSON",
    ),
    "non-UTF-8 trainer_state.json": ("bad-utf8", run, {}, ValueError, r"trainer_state.json is not UTF-8"),
    "malformed RNG state": ("bad-rng", run, {}, ValueError, "malformed RNG state"),
    "unknown file listed": ("bad-files", run, {}, ValueError, "'files' entry"),
}


def _make_checkpoint(folder: Path, how: str) -> None:
    model, opt, sched = run()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    save_checkpoint(
        folder,
        model=model,
        optimizer=None if how == "no-opt" else opt,
        scheduler=None if how == "no-sched" else sched,
        state={"step": 3},
    )
    if how == "trunc-model":
        _truncate(folder, "model.safetensors", 0.7)
    elif how == "trunc-opt":
        _truncate(folder, "optimizer.safetensors", 0.9)
    elif how == "bad-json":
        _truncate(folder, "trainer_state.json", 0.5)
    elif how == "bad-utf8":
        (folder / "trainer_state.json").write_bytes(b'{"files": "\xfe"}')
    elif how == "bad-rng":
        _edit_meta(folder, lambda m: m["rng"]["python"].__setitem__(1, [1, 2, 3]))
    elif how == "bad-files":
        _edit_meta(folder, lambda m: m["files"].append("evil.pkl"))


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_failed_load_checkpoint_changes_nothing(tmp_path, case) -> None:
    how, make, kwargs, error, message = BAD_CHECKPOINTS[case]
    _make_checkpoint(tmp_path / "bad", how)
    model, opt, sched = make()
    random.seed(3)
    np.random.seed(3)
    before = full_state(model, opt, sched)
    with pytest.raises(error, match=message):
        load_checkpoint(tmp_path / "bad", model=model, optimizer=opt, scheduler=sched, **kwargs)
    assert_state_equal(before, full_state(model, opt, sched))
    _make_checkpoint(tmp_path / "good", "full")
    model, opt, sched = run()
    assert load_checkpoint(tmp_path / "good", model=model, optimizer=opt, scheduler=sched) == {"step": 3}
    torch.manual_seed(5)
    assert torch.equal(
        model[0].weight, torch.randn_like(model[0].weight)
    )  # the retry loaded the saved weights


def test_full_state_sees_a_load(tmp_path) -> None:
    """Control for the test above: a load that changes anything is seen by ``assert_state_equal``."""
    _make_checkpoint(tmp_path / "c", "full")
    model, opt, sched = run()
    before = full_state(model, opt, sched)
    load_checkpoint(tmp_path / "c", model=model, optimizer=opt, scheduler=sched)
    with pytest.raises(AssertionError):
        assert_state_equal(before, full_state(model, opt, sched))
