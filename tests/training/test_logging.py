"""MetricLogger (JSON lines, rank 0 only) and format_table."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from vlblocks.training import MetricLogger, format_table, read_jsonl


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
