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


def test_import_vlblocks_imports_neither_transformers_nor_timm() -> None:
    """Heavy optional imports happen inside the functions that need them (peft/lora.py used to import transformers)."""
    code = "import vlblocks, sys; assert 'transformers' not in sys.modules and 'timm' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_native_cnn_encoder_and_lora_run_without_transformers_or_timm() -> None:
    """The native CNN is wrapped through timm's interface without importing timm; LoRA on it needs no transformers."""
    code = (
        "import sys, torch\n"
        "from vlblocks import ImageEncoder, apply_lora, merge_lora\n"
        "enc = ImageEncoder.tiny('cnn', image_size=32, dim=16)\n"
        "assert enc.source == 'native' and enc.image_config.size == 32\n"
        "apply_lora(enc, 'stem.down.0', r=2, alpha=4)\n"
        "merge_lora(enc)\n"
        "assert enc(torch.randn(2, 3, 32, 32)).tokens.shape == (2, 17, 16)\n"
        "loaded = sorted(m for m in ('transformers', 'timm') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
