"""Checks of an ``adapter_config.json`` entry before ``load_adapter`` changes anything (peft's LoRA config and the
vlblocks adapter / module entries): each wrong or missing field is a ``ValueError`` naming the file and the field.

No tensors here (see ``vlblocks.peft.lora`` for the LoRA shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ACT_NAMES", "ADAPTER_TYPE", "MODULES_TYPE", "check_entry", "config_error"]

ADAPTER_TYPE = "VLBLOCKS_ADAPTER"
MODULES_TYPE = "VLBLOCKS_MODULES"
ACT_NAMES = ("gelu", "gelu_tanh", "relu", "silu", "leaky_relu", "tanh")


def config_error(path: Path, entry: int | None, what: str) -> ValueError:
    where = f" (entry {entry})" if entry is not None else ""
    return ValueError(f"{path}{where}: {what}")


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_lora_entry(entry: dict[str, Any], err: Callable[[str], ValueError]) -> None:
    r = entry.get("r")
    if "r" not in entry or isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise err(
            f"a LORA config needs 'r', a positive int, got {r!r}"
            if "r" in entry
            else "a LORA config needs 'r'"
        )
    alpha = entry.get("lora_alpha", 8)
    if not _is_num(alpha) or not 0 < alpha < float("inf"):
        raise err(f"'lora_alpha' must be a positive finite number, got {alpha!r}")
    dropout = entry.get("lora_dropout", 0.0)
    if not _is_num(dropout) or not 0 <= dropout < 1:
        raise err(f"'lora_dropout' must be a number in [0, 1), got {dropout!r}")
    for key, ok in (("rank_pattern", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
                    ("alpha_pattern", lambda v: _is_num(v) and 0 < v < float("inf"))):  # fmt: skip
        patterns = entry.get(key) or {}
        if not isinstance(patterns, dict) or not all(
            isinstance(k, str) and ok(v) for k, v in patterns.items()
        ):
            raise err(f"{key!r} must map module patterns to positive numbers, got {patterns!r}")
    targets = entry.get("target_modules")
    if not (targets is None or isinstance(targets, str) or _is_str_list(targets)):
        raise err(f"'target_modules' must be a str or a list of str, got {targets!r}")


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_entry(entry: Any, err: Callable[[str], ValueError]) -> None:
    kind = entry.get("peft_type") if isinstance(entry, dict) else None
    if kind == "LORA":
        _check_lora_entry(entry, err)
    elif kind == ADAPTER_TYPE:
        if not _is_str_list(entry.get("target_modules")) or not entry["target_modules"]:
            raise err(
                f"an adapter entry needs 'target_modules', a list of str, got {entry.get('target_modules')!r}"
            )
        b = entry.get("bottleneck")
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise err(f"an adapter entry needs 'bottleneck', a positive int, got {b!r}")
        if entry.get("act") not in ACT_NAMES:
            raise err(f"an adapter entry needs 'act', one of {ACT_NAMES}, got {entry.get('act')!r}")
        dropout = entry.get("dropout", 0.0)
        if not _is_num(dropout) or not 0 <= dropout < 1:
            raise err(f"'dropout' must be a number in [0, 1), got {dropout!r}")
    elif kind == MODULES_TYPE:
        modules = entry.get("modules")
        if not isinstance(modules, dict) or not all(isinstance(v, str) for v in modules.values()):
            raise err(
                f"a modules entry needs 'modules', a dict of module name -> class name, got {modules!r}"
            )
    else:
        raise err(f"unsupported peft_type {kind!r}; expected 'LORA', {ADAPTER_TYPE!r} or {MODULES_TYPE!r}")
