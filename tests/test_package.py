"""The package: version, explicit re-exports, and an import that touches no network and loads no pickle."""

from __future__ import annotations

import subprocess
import sys

import vlblocks


def test_version_and_exports_resolve() -> None:
    assert isinstance(vlblocks.__version__, str) and vlblocks.__version__.count(".") == 2
    for name in vlblocks.__all__:
        assert getattr(vlblocks, name) is not None, name


def test_import_does_not_touch_the_network() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network access at import time')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import vlblocks, vlblocks.data, vlblocks.metrics, vlblocks.training\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
