"""Metric logging for recipes: JSON-lines files written by rank 0, and markdown tables for end-of-run summaries.

One ``MetricLogger.log(**metrics)`` call appends one JSON object (the metrics plus a ``time`` stamp in seconds
since the epoch) as one line of ``metrics.jsonl``; tensors and numpy scalars are turned into Python numbers.
Under torchrun only the process with rank 0 writes. ``format_table`` renders a list of dicts as a markdown table;
``write_summary`` prints a run's epoch table and writes its ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MetricLogger", "format_table", "read_jsonl", "write_summary"]


def _to_json_value(value: Any, name: str) -> Any:
    """Tensors / numpy values -> Python numbers or lists; other values must already be JSON-able."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _to_json_value(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json_value(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"metric {name!r} must be a number, str, tensor or JSON-able value, got {type(value).__name__}"
    )


class MetricLogger:
    """Append one JSON line per ``log`` call to ``path`` (only when ``rank == 0``).

    Args:
        path: the ``.jsonl`` file (its folder is created on the first write).
        rank: this process's global rank; ranks other than 0 never touch the file.
    """

    def __init__(self, path: str | os.PathLike, *, rank: int = 0) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be a non-negative int, got {rank!r}")
        self.path = Path(path)
        self.rank = rank

    @property
    def enabled(self) -> bool:
        """True on the writing process (rank 0)."""
        return self.rank == 0

    def log(self, **metrics: Any) -> dict[str, Any] | None:
        """Append ``{"time": <seconds since epoch>, **metrics}`` as one line; returns the record (None off rank 0)."""
        if not self.enabled:
            return None
        record = {"time": time.time(), **{k: _to_json_value(v, k) for k, v in metrics.items()}}
        line = json.dumps(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return record

    def __repr__(self) -> str:
        return f"MetricLogger(path={str(self.path)!r}, rank={self.rank})"


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Read a JSON-lines file written by ``MetricLogger`` (blank lines skipped). `missing_ok`: a file that does not
    exist reads as no records (e.g. the history of a run folder that logged no epoch) instead of raising
    ``FileNotFoundError``."""
    if missing_ok and not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _format_cell(value: Any, precision: int) -> str:
    if value is None:
        return ""
    if isinstance(value, torch.Tensor | np.generic):
        value = value.item()
    if isinstance(value, float):
        return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.{precision}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(
    rows: Sequence[dict[str, Any]], *, columns: Sequence[str] | None = None, precision: int = 4
) -> str:
    """Render rows as a markdown table (floats with ``precision`` decimals, missing cells empty).

    Args:
        rows: one dict per row.
        columns: column order; default the keys in order of first appearance.
        precision: decimals for floats.

    Returns:
        The table, header and separator lines included, without a trailing newline.
    """
    if isinstance(precision, bool) or not isinstance(precision, int) or precision < 0:
        raise ValueError(f"precision must be a non-negative int, got {precision!r}")
    if not rows:
        raise ValueError("rows must be non-empty, got an empty sequence")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [
        "| " + " | ".join(str(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format_cell(row.get(c), precision) for c in columns) + " |")
    return "\n".join(lines)


def write_summary(
    folder: str | os.PathLike, history: Sequence[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The end of a run's report: print its epoch table (`format_table`, after a blank line) and write
    ``folder/summary.json``: ``{"final": history[-1], "history": history, **extra}`` (indented JSON). Returns it.

    Args:
        folder: the run folder (it must exist).
        history: the epoch rows, the last one the final result (e.g. ``TrainingRun.history``).
        extra: more JSON-able entries (e.g. parameter counts).
    """
    if not history:
        raise ValueError("history must hold at least one row, got none")
    print("\n" + format_table(history))
    summary = {"final": history[-1], "history": list(history), **extra}
    (Path(folder) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
