"""Crash injection for the save tests: every filesystem call a save makes can be the last one it makes.

``CrashPlan.run(fn, crash_at=k)`` runs ``fn`` with the filesystem functions a save uses wrapped (``os.rename``,
``os.replace``, ``os.mkdir``, ``os.remove``, ``os.unlink``, ``os.rmdir``, ``os.fsync``, ``shutil.rmtree`` and the
given file writers). The k-th wrapped call raises ``Crash``; so does every later one, as in a killed process (so
clean-up code cannot repair anything either). With ``truncate=True`` a crashing writer first writes half its file.
``Crash`` is a ``BaseException``, so ``except OSError`` / ``except Exception`` handlers do not swallow it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FS_FUNCTIONS = [
    (os, "rename"),
    (os, "replace"),
    (os, "mkdir"),
    (os, "remove"),
    (os, "unlink"),
    (os, "rmdir"),
    (os, "fsync"),
    (shutil, "rmtree"),
]


class Crash(BaseException):
    """A simulated kill / power cut at one filesystem step."""


class CrashPlan:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, writers: list[tuple[Any, str]]) -> None:
        self.monkeypatch = monkeypatch
        self.writers = writers

    def run(
        self, fn: Callable[[], Any], *, crash_at: int | None = None, truncate: bool = False
    ) -> tuple[bool, list[str]]:
        """(crashed, names of the wrapped calls made, in order) of one call of ``fn``."""
        calls: list[str] = []
        dead = [False]

        def wrap(name: str, real: Callable, is_writer: bool) -> Callable:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if dead[0]:
                    raise Crash(f"after the crash: {name}")
                calls.append(name)
                if crash_at is not None and len(calls) - 1 == crash_at:
                    dead[0] = True
                    if truncate and is_writer:
                        real(*args, **kwargs)
                        path = Path(args[1])
                        data = path.read_bytes()
                        path.write_bytes(data[: len(data) // 2])
                    raise Crash(f"crash at step {crash_at}: {name}")
                return real(*args, **kwargs)

            return wrapper

        with self.monkeypatch.context() as m:
            for owner, attr in FS_FUNCTIONS:
                m.setattr(owner, attr, wrap(attr, getattr(owner, attr), False))
            for owner, attr in self.writers:
                m.setattr(owner, attr, wrap(attr, getattr(owner, attr), True))
            try:
                fn()
            except Crash:
                pass
        return dead[0], calls


@pytest.fixture
def crash_plan(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[tuple[Any, str]]], CrashPlan]:
    return lambda writers: CrashPlan(monkeypatch, writers)
