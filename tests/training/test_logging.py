"""MetricLogger (JSON lines, rank 0 only), read_jsonl, format_table and write_summary."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from vlblocks.training import MetricLogger, format_table, read_jsonl, write_summary


def test_writes_valid_jsonl(tmp_path) -> None:
    path = tmp_path / "runs" / "vqa" / "metrics.jsonl"
    logger = MetricLogger(path)
    t0 = time.time()
    rec = logger.log(step=1, loss=torch.tensor(0.5), acc=np.float32(0.25), split="train")
    logger.log(step=2, loss=0.4, hist=torch.tensor([1, 2]), per_type={"yes/no": 0.5})
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert records == read_jsonl(path)
    assert records[0] == rec
    assert records[0]["step"] == 1 and records[0]["loss"] == 0.5 and records[0]["acc"] == 0.25
    assert records[0]["split"] == "train"
    assert records[1]["hist"] == [1, 2] and records[1]["per_type"] == {"yes/no": 0.5}
    assert all(t0 - 1 <= r["time"] <= time.time() + 1 for r in records)
    MetricLogger(path).log(step=3)  # appends, never truncates
    assert len(read_jsonl(path)) == 3


def test_non_zero_rank_writes_nothing(tmp_path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    logger = MetricLogger(path, rank=1)
    assert logger.log(step=1, loss=1.0) is None
    assert not path.exists() and not path.parent.exists()
    assert not logger.enabled and MetricLogger(path).enabled


def test_logger_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="rank must be a non-negative int"):
        MetricLogger(tmp_path / "m.jsonl", rank=-1)
    with pytest.raises(TypeError, match="metric 'model'"):
        MetricLogger(tmp_path / "m.jsonl").log(model=torch.nn.Linear(1, 1))


def test_format_table() -> None:
    rows = [
        {"strategy": "greedy", "bleu4": 0.123456, "cider": 1.0},
        {"strategy": "beam", "bleu4": 0.2, "note": "k=3|x"},
    ]
    expected = (
        "| strategy | bleu4 | cider | note |\n"
        "|---|---|---|---|\n"
        "| greedy | 0.1235 | 1.0000 |  |\n"
        "| beam | 0.2000 |  | k=3\\|x |"
    )
    assert format_table(rows) == expected
    assert format_table(rows, columns=["bleu4"], precision=1) == "| bleu4 |\n|---|\n| 0.1 |\n| 0.2 |"
    assert (
        format_table([{"n": 3, "x": float("nan"), "t": torch.tensor(2)}])
        == "| n | x | t |\n|---|---|---|\n| 3 | nan | 2 |"
    )


def test_format_table_errors() -> None:
    with pytest.raises(ValueError, match="rows must be non-empty"):
        format_table([])
    with pytest.raises(ValueError, match="precision must be a non-negative int"):
        format_table([{"a": 1}], precision=-1)


def test_read_jsonl_missing_ok(tmp_path) -> None:
    missing = tmp_path / "none" / "metrics.jsonl"
    assert read_jsonl(missing, missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(missing)  # control: by default a missing file is an error
    MetricLogger(missing).log(step=1)
    assert [r["step"] for r in read_jsonl(missing, missing_ok=True)] == [1]


def test_write_summary_prints_the_table_and_writes_summary_json(tmp_path, capsys) -> None:
    history = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.75}]
    summary = write_summary(tmp_path, history, params=10)
    assert capsys.readouterr().out == "\n" + format_table(history) + "\n"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == summary == {"final": {"epoch": 2, "acc": 0.75}, "history": history, "params": 10}
    assert list(saved) == ["final", "history", "params"]
    with pytest.raises(ValueError, match="history"):
        write_summary(tmp_path, [])
