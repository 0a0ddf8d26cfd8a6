"""What every recipe test needs: run an example script in a subprocess, offline and on one thread, and read its run
folder. Importable from the tests in this folder (`pythonpath` in pyproject.toml's pytest section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a recipe subprocess: offline, one OpenMP thread, unbuffered, this checkout's vlblocks."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env | extra


def run_script(
    script: Path, args: list[str], *, launcher: list[str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python script *args` (or `*launcher script *args`, e.g. torchrun) from the repository root."""
    cmd = [*(launcher or [sys.executable]), str(script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert the run succeeded, showing the end of its output when it did not."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rows(folder: Path) -> list[dict]:
    """The epoch rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
