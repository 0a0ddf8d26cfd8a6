"""Bad-input suite for files and metrics: checkpoints, adapters, classification_report, vqa_accuracy (issue 7).

One table of cases. Each case either must raise a clear error (the exception type and a message that names the
argument or the file and what is wrong) or must return its documented result. ``test_counts`` keeps the numbers in
docs/design-notes.md true.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from vlblocks.metrics import classification_report, vqa_accuracy
from vlblocks.peft import apply_lora, load_adapter, lora_layers, save_adapter
from vlblocks.training import has_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class Case:
    name: str
    call: Callable[[Path], Any]  # receives a fresh tmp_path
    error: type[BaseException] | tuple[type[BaseException], ...] | None = None
    match: str | None = None
    check: Callable[[Any], bool] | None = None  # the documented result


def lin() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def ckpt(tmp: Path, **kw) -> Path:
    return save_checkpoint(tmp / "c", model=lin(), **kw)


def lora_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(dtype)
    apply_lora(model, ["0", "1"], r=2)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.fill_(0.5)
    return model


def adapter(tmp: Path) -> Path:
    return save_adapter(lora_model(), tmp / "a")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def with_file(make: Callable[[Path], Path], name: str, data: bytes | str) -> Callable[[Path], Path]:
    """A folder made by ``make`` whose file ``name`` is replaced by ``data``."""

    def build(tmp: Path) -> Path:
        folder = make(tmp)
        write(folder / name, data)
        return folder

    return build


def edit_config(**changes: Any) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        folder = adapter(tmp)
        config = json.loads((folder / "adapter_config.json").read_text())
        config.update(changes)
        (folder / "adapter_config.json").write_text(json.dumps(config))
        return folder

    return build


def load_c(make: Callable[[Path], Path], model: Callable[[], nn.Module] = lin, **kw) -> Callable[[Path], Any]:
    return lambda tmp: load_checkpoint(make(tmp), model=model(), **kw)


def load_a(
    make: Callable[[Path], Path],
    model: Callable[[], nn.Module] = lambda: nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
):
    return lambda tmp: load_adapter(model(), make(tmp))


def report(*args: Any, **kw: Any) -> Callable[[Path], Any]:
    return lambda tmp: classification_report(*args, **kw)


def vqa(predictions: Any, answers: Any) -> Callable[[Path], Any]:
    return lambda tmp: vqa_accuracy(predictions, answers)


def round_trip_state(state: dict) -> Callable[[Path], Any]:
    return lambda tmp: load_checkpoint(ckpt(tmp, state=state), model=lin(), restore_rng=False)


def float64_checkpoint_into_float32(tmp: Path) -> torch.Tensor:
    save_checkpoint(tmp / "c", model=lin().double())
    model = lin()
    load_checkpoint(tmp / "c", model=model, restore_rng=False)
    return model.weight


def float64_adapter_into_float32(tmp: Path) -> torch.Tensor:
    save_adapter(lora_model(torch.float64), tmp / "a")
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_adapter(model, tmp / "a")
    return model[0].lora_B


PICKLE = b"\x80\x04\x95" + b"\x00" * 40
TEN = ["yes"] * 10
SC = "vlblocks/metrics/vqa.py (review helper): "

CASES = [
    # ---------------------------------------------------------------- save_checkpoint
    Case(
        "save_checkpoint folder=None",
        lambda t: save_checkpoint(None, model=lin()),
        TypeError,
        "folder must be a str or os.PathLike",
    ),
    Case(
        "save_checkpoint folder=123",
        lambda t: save_checkpoint(123, model=lin()),
        TypeError,
        "folder must be a str or os.PathLike",
    ),
    Case(
        "save_checkpoint folder=bytes",
        lambda t: save_checkpoint(b"c", model=lin()),
        TypeError,
        "folder must be",
    ),
    Case(
        "save_checkpoint folder=''", lambda t: save_checkpoint("", model=lin()), ValueError, "non-empty path"
    ),
    Case(
        "save_checkpoint model=None",
        lambda t: save_checkpoint(t / "c", model=None),
        TypeError,
        "model must be an nn.Module",
    ),
    Case(
        "save_checkpoint model=state_dict",
        lambda t: save_checkpoint(t / "c", model=lin().state_dict()),
        TypeError,
        "model must be an nn.Module, got OrderedDict",
    ),
    Case(
        "save_checkpoint optimizer=str",
        lambda t: save_checkpoint(t / "c", model=lin(), optimizer="adam"),
        TypeError,
        "optimizer must be a torch.optim.Optimizer",
    ),
    Case(
        "save_checkpoint scheduler=object",
        lambda t: save_checkpoint(t / "c", model=lin(), scheduler=object()),
        TypeError,
        "scheduler must have a state_dict",
    ),
    Case(
        "save_checkpoint state=list",
        lambda t: save_checkpoint(t / "c", model=lin(), state=[1]),
        TypeError,
        "state must be a dict or None, got list",
    ),
    Case(
        "save_checkpoint state has a function",
        lambda t: save_checkpoint(t / "c", model=lin(), state={"f": len}),
        TypeError,
        r"cannot store builtin_function_or_method at 'state.f'",
    ),
    Case(
        "save_checkpoint state has a set",
        lambda t: save_checkpoint(t / "c", model=lin(), state={"s": {1}}),
        TypeError,
        r"cannot store set at 'state.s'",
    ),
    Case(
        "save_checkpoint state has a tuple key",
        lambda t: save_checkpoint(t / "c", model=lin(), state={(1, 2): 0}),
        TypeError,
        "dict keys must be",
    ),
    Case(
        "save_checkpoint folder is a file",
        lambda t: save_checkpoint(write(t / "f", "x"), model=lin()),
        ValueError,
        "existing file",
    ),
    Case(
        "save_checkpoint folder holds other files",
        lambda t: save_checkpoint(write(t / "run" / "notes.txt", "x").parent, model=lin()),
        ValueError,
        r"refusing to replace .*notes.txt",
    ),
    Case(
        "save_checkpoint parent is a file",
        lambda t: save_checkpoint(write(t / "f", "x") / "c", model=lin()),
        (FileExistsError, NotADirectoryError),
        r"/f",
    ),
    Case(
        "save_checkpoint state NaN / inf round trip",
        round_trip_state({"best": math.nan, "x": -math.inf}),
        check=lambda s: math.isnan(s["best"]) and s["x"] == -math.inf,
    ),
    Case(
        "save_checkpoint state bf16 tensor round trip",
        round_trip_state({"t": torch.ones(2, dtype=torch.bfloat16)}),
        check=lambda s: s["t"].dtype == torch.bfloat16,
    ),
    Case("save_checkpoint empty state", round_trip_state({}), check=lambda s: s == {}),
    # ---------------------------------------------------------------- load_checkpoint / has_checkpoint
    Case(
        "load_checkpoint folder=None",
        lambda t: load_checkpoint(None, model=lin()),
        TypeError,
        "folder must be",
    ),
    Case(
        "load_checkpoint model=None",
        lambda t: load_checkpoint(ckpt(t), model=None),
        TypeError,
        "model must be an nn.Module",
    ),
    Case(
        "load_checkpoint missing folder",
        lambda t: load_checkpoint(t / "nope", model=lin()),
        FileNotFoundError,
        "does not exist",
    ),
    Case(
        "load_checkpoint folder is a file",
        lambda t: load_checkpoint(write(t / "f", "x"), model=lin()),
        NotADirectoryError,
        "is not a folder",
    ),
    Case(
        "load_checkpoint empty folder",
        lambda t: load_checkpoint((t / "e").mkdir() or t / "e", model=lin()),
        FileNotFoundError,
        "trainer_state.json is missing",
    ),
    Case(
        "load_checkpoint empty trainer_state.json",
        load_c(with_file(ckpt, "trainer_state.json", b"")),
        ValueError,
        r"trainer_state.json is empty",
    ),
    Case(
        "load_checkpoint non-UTF-8 trainer_state.json",
        load_c(with_file(ckpt, "trainer_state.json", b"\xff\xfe{")),
        ValueError,
        r"trainer_state.json is not UTF-8",
    ),
    Case(
        "load_checkpoint trainer_state.json not an object",
        load_c(with_file(ckpt, "trainer_state.json", "[]")),
        ValueError,
        r"trainer_state.json is not a vlblocks trainer state",
    ),
    Case(
        "load_checkpoint future format_version",
        load_c(
            with_file(
                ckpt,
                "trainer_state.json",
                json.dumps({"format_version": 99, "files": ["model.safetensors", "rng.safetensors"]}),
            )
        ),
        ValueError,
        "format_version 99",
    ),
    Case(
        "load_checkpoint empty model file",
        load_c(with_file(ckpt, "model.safetensors", b"")),
        ValueError,
        r"model.safetensors is not a valid safetensors file: 0 bytes",
    ),
    Case(
        "load_checkpoint pickle model file",
        load_c(with_file(ckpt, "model.safetensors", PICKLE)),
        ValueError,
        "pickle",
    ),
    Case(
        "load_checkpoint map_location='gpu9'",
        load_c(ckpt, map_location="gpu9"),
        ValueError,
        "map_location must name a torch device",
    ),
    Case(
        "load_checkpoint other architecture",
        load_c(ckpt, model=lambda: nn.Linear(3, 5)),
        ValueError,
        r"does not fit the model: shape mismatch \[.*'weight: model \(5, 3\), file \(2, 3\)'",
    ),
    Case(
        "load_checkpoint optimizer not saved",
        lambda t: load_checkpoint(
            ckpt(t), model=(m := lin()), optimizer=torch.optim.SGD(m.parameters(), lr=0.1)
        ),
        ValueError,
        "has no optimizer state",
    ),
    Case(
        "load_checkpoint float64 into float32 model",
        float64_checkpoint_into_float32,
        check=lambda w: w.dtype == torch.float32 and torch.equal(w, lin().weight),
    ),
    Case("has_checkpoint(None)", lambda t: has_checkpoint(None), TypeError, "folder must be"),
    Case("has_checkpoint missing folder", lambda t: has_checkpoint(t / "nope"), check=lambda r: r is False),
    Case(
        "has_checkpoint of a file", lambda t: has_checkpoint(write(t / "f", "x")), check=lambda r: r is False
    ),
    Case(
        "has_checkpoint truncated model file",
        lambda t: has_checkpoint(with_file(ckpt, "model.safetensors", b"\x08")(t)),
        check=lambda r: r is False,
    ),
    # ---------------------------------------------------------------- save_adapter
    Case(
        "save_adapter model=None",
        lambda t: save_adapter(None, t / "a"),
        TypeError,
        "model must be an nn.Module",
    ),
    Case(
        "save_adapter no PEFT layers",
        lambda t: save_adapter(lin(), t / "a"),
        ValueError,
        "has no LoRA layers or PEFT modules",
    ),
    Case("save_adapter folder=None", lambda t: save_adapter(lora_model(), None), TypeError, "folder must be"),
    Case(
        "save_adapter folder is a file",
        lambda t: save_adapter(lora_model(), write(t / "f", "x")),
        ValueError,
        "existing file",
    ),
    Case(
        "save_adapter folder holds other files",
        lambda t: save_adapter(lora_model(), write(t / "a" / "tokenizer.json", "{}").parent),
        ValueError,
        r"refusing to replace .*tokenizer.json",
    ),
    Case(
        "save_adapter base_model_name_or_path=3",
        lambda t: save_adapter(lora_model(), t / "a", base_model_name_or_path=3),
        TypeError,
        "base_model_name_or_path must be a str",
    ),
    Case(
        "save_adapter float64 LoRA into float32 model",
        float64_adapter_into_float32,
        check=lambda b: b.dtype == torch.float32 and bool(torch.all(b == 0.5)),
    ),
    # ---------------------------------------------------------------- load_adapter
    Case(
        "load_adapter model=None",
        lambda t: load_adapter(None, adapter(t)),
        TypeError,
        "model must be an nn.Module",
    ),
    Case("load_adapter folder=None", lambda t: load_adapter(lin(), None), TypeError, "folder must be"),
    Case(
        "load_adapter missing folder",
        lambda t: load_adapter(lin(), t / "nope"),
        FileNotFoundError,
        "adapter_config.json not found",
    ),
    Case(
        "load_adapter folder is a file",
        lambda t: load_adapter(lin(), write(t / "f", "x")),
        NotADirectoryError,
        "is not a folder",
    ),
    Case(
        "load_adapter empty config",
        load_a(with_file(adapter, "adapter_config.json", b"")),
        ValueError,
        r"adapter_config.json is empty",
    ),
    Case(
        "load_adapter non-UTF-8 config",
        load_a(with_file(adapter, "adapter_config.json", b'{"r": "\xe9"}')),
        ValueError,
        r"adapter_config.json is not UTF-8",
    ),
    Case(
        "load_adapter config = []",
        load_a(with_file(adapter, "adapter_config.json", "[]")),
        ValueError,
        r"adapter_config.json: the config is an empty list",
    ),
    Case(
        "load_adapter unknown peft_type",
        load_a(edit_config(peft_type="PREFIX_TUNING")),
        ValueError,
        r"unsupported peft_type 'PREFIX_TUNING'",
    ),
    Case(
        "load_adapter lora_alpha='8'",
        load_a(edit_config(lora_alpha="8")),
        ValueError,
        r"adapter_config.json: 'lora_alpha' must be a positive finite number, got '8'",
    ),
    Case(
        "load_adapter lora_dropout=1.5",
        load_a(edit_config(lora_dropout=1.5)),
        ValueError,
        r"'lora_dropout' must be a number in \[0, 1\), got 1.5",
    ),
    Case(
        "load_adapter rank_pattern r=0",
        load_a(edit_config(rank_pattern={"0": 0})),
        ValueError,
        "'rank_pattern' must map",
    ),
    Case(
        "load_adapter r=True", load_a(edit_config(r=True)), ValueError, "needs 'r', a positive int, got True"
    ),
    Case(
        "load_adapter target_modules=5",
        load_a(edit_config(target_modules=5)),
        ValueError,
        "'target_modules' must be a str or a list of str",
    ),
    Case(
        "load_adapter empty weights",
        load_a(with_file(adapter, "adapter_model.safetensors", b"")),
        ValueError,
        r"adapter_model.safetensors is not a valid safetensors file: 0 bytes",
    ),
    Case(
        "load_adapter pickle weights",
        load_a(with_file(adapter, "adapter_model.safetensors", PICKLE)),
        ValueError,
        "torch.save / pickle",
    ),
    Case(
        "load_adapter into an unrelated model",
        load_a(adapter, model=lambda: nn.Sequential(nn.Conv1d(3, 4, 1))),
        ValueError,
        "matched no",
    ),
    # ---------------------------------------------------------------- classification_report (beyond the scikit-learn table)
    Case("classification_report y_true='abc'", report("abc", "abd"), TypeError, "y_true must be a list"),
    Case(
        "classification_report generator",
        report((i for i in [0, 1]), [0, 1]),
        TypeError,
        "y_true must be a list",
    ),
    Case("classification_report None", report(None, [0]), TypeError, "y_true must be a list"),
    Case(
        "classification_report 2-D tensor",
        report(torch.zeros(2, 2), torch.zeros(2, 2)),
        ValueError,
        r"y_true must be 1-D \(N,\), got shape \(2, 2\)",
    ),
    Case(
        "classification_report num_classes=0",
        report([0], [0], num_classes=0),
        ValueError,
        "num_classes must be a positive int, got 0",
    ),
    Case(
        "classification_report num_classes=True",
        report([0], [0], num_classes=True),
        ValueError,
        "num_classes must be a positive int, got True",
    ),
    Case(
        "classification_report num_classes=2.0",
        report([0], [0], num_classes=2.0),
        ValueError,
        "num_classes must be a positive int, got 2.0",
    ),
    Case(
        "classification_report label >= num_classes",
        report([0, 3], [0, 1], num_classes=3),
        ValueError,
        r"labels must lie in \[0, num_classes=3\)",
    ),
    Case(
        "classification_report num_classes with str",
        report(["a"], ["a"], num_classes=2),
        ValueError,
        "num_classes needs integer labels",
    ),
    Case(
        "classification_report labels and num_classes",
        report([0], [0], labels=[0], num_classes=1),
        ValueError,
        "at most one of num_classes and labels",
    ),
    Case(
        "classification_report bf16 tensor",
        report(torch.tensor([0, 1, 1], dtype=torch.bfloat16), torch.tensor([0, 1, 0])),
        check=lambda r: r.accuracy == pytest.approx(2 / 3),
    ),
    Case(
        "classification_report int8 tensor",
        report(torch.tensor([0, 1], dtype=torch.int8), torch.tensor([1, 1], dtype=torch.int8)),
        check=lambda r: r.accuracy == 0.5 and r.support.tolist() == [1, 1],
    ),
    Case(
        "classification_report numpy str",
        report(np.array(["a", "b"]), np.array(["a", "a"])),
        check=lambda r: r.labels.tolist() == ["a", "b"],
    ),
    # ---------------------------------------------------------------- vqa_accuracy(predictions, answers) -> float
    Case(
        "vqa_accuracy predictions='yes'",
        vqa("yes", [TEN]),
        TypeError,
        "predictions must be a sequence of str, got a single str",
    ),
    Case(
        "vqa_accuracy predictions=[1]", vqa([1], [TEN]), TypeError, r"predictions\[0\] must be a str, got int"
    ),
    Case(
        "vqa_accuracy predictions=[b'yes']",
        vqa([b"yes"], [TEN]),
        TypeError,
        r"predictions\[0\] must be a str, got bytes",
    ),
    Case(
        "vqa_accuracy predictions=[nan]",
        vqa([math.nan], [TEN]),
        TypeError,
        r"predictions\[0\] must be a str, got float",
    ),
    Case(
        "vqa_accuracy answers=['yes']",
        vqa(["yes"], ["yes"]),
        ValueError,
        r"answers\[0\] must be a non-empty list of str",
    ),
    Case(
        "vqa_accuracy answers=[[]]",
        vqa(["yes"], [[]]),
        ValueError,
        r"answers\[0\] must be a non-empty list of str",
    ),
    Case("vqa_accuracy length mismatch", vqa(["yes", "no"], [TEN]), ValueError, "same length, got 2 and 1"),
    Case("vqa_accuracy empty", vqa([], []), ValueError, "must be non-empty"),
    Case("vqa_accuracy tuples", vqa(("yes",), (tuple(TEN),)), check=lambda r: r == 1.0),
    Case("vqa_accuracy numpy str array", vqa(np.array(["yes"]), [TEN]), check=lambda r: r == 1.0),
    Case(
        "vqa_accuracy official: no normalisation when all humans agree",
        vqa(["Yes\n"], [TEN]),
        check=lambda r: r == 0.0,
    ),
    Case(
        "vqa_accuracy normalised when humans differ",
        vqa(["Two."], [["2"] * 9 + ["3"]]),
        check=lambda r: r == 1.0,
    ),
    Case(
        "vqa_accuracy predictions=None",
        vqa(None, [TEN]),
        TypeError,
        "predictions",
    ),
    Case(
        "vqa_accuracy answers=None",
        vqa(["yes"], None),
        TypeError,
        "answers",
    ),
    Case(
        "vqa_accuracy predictions=generator",
        vqa((p for p in ["yes"]), [TEN]),
        TypeError,
        "predictions",
    ),
    Case(
        "vqa_accuracy answers=[[1, 2]]",
        vqa(["yes"], [[1, 2]]),
        TypeError,
        r"answers\[0\]",
    ),
    Case(
        "vqa_accuracy answers=[None]",
        vqa(["yes"], [None]),
        ValueError,
        r"answers\[0\]",
    ),
    Case(
        "vqa_accuracy predictions=dict",
        vqa({"q1": "yes"}, [TEN]),
        TypeError,
        "predictions",
    ),
    Case(
        "vqa_accuracy answers=[set]",
        vqa(["yes"], [{"yes", "no"}]),
        TypeError,
        r"answers\[0\]",
    ),
]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[c.name for c in CASES],
)
def test_bad_input(tmp_path, case: Case) -> None:
    if case.check is not None:
        assert case.check(case.call(tmp_path)), case.name
        return
    with pytest.raises(case.error, match=case.match):
        case.call(tmp_path)


def test_counts() -> None:
    """The counts docs/design-notes.md quotes (section "Bad-input suite: files and metrics")."""
    errors = sum(c.error is not None for c in CASES)
    results = sum(c.check is not None for c in CASES)
    assert len({c.name for c in CASES}) == len(CASES)
    assert (len(CASES), errors, results) == (92, 77, 15)
