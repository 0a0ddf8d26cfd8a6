"""Selecting modules of a model by name: suffixes or full-match regexes, with exclusions.

Used by `apply_lora` and `apply_adapters`. A pattern matches a module name when it equals the name, is a dotted
suffix of it (`"q"` matches `"blocks.0.attn.q"`), or fully matches it as a regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn

__all__ = ["matches", "select_modules"]


def matches(name: str, pattern: str) -> bool:
    """True when `pattern` is `name`, a dotted suffix of it, or a regex that fully matches it."""
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def select_modules(
    model: nn.Module,
    targets: str | Iterable[str],
    *,
    exclude: str | Iterable[str] | None = None,
    predicate: Callable[[str, nn.Module], bool] | None = None,
) -> list[str]:
    """Names of the modules of `model` matched by any of `targets` and by none of `exclude`, in model order.

    Args:
        targets: one pattern or several.
        exclude: patterns whose matches are dropped.
        predicate: an extra filter `(name, module) -> bool` (for example "is a Linear").
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty string or list of non-empty strings, got {targets!r}")
    excludes = [] if exclude is None else ([exclude] if isinstance(exclude, str) else list(exclude))
    names = []
    for name, module in model.named_modules():
        if not name or not any(matches(name, t) for t in targets):
            continue
        if any(matches(name, e) for e in excludes):
            continue
        if predicate is not None and not predicate(name, module):
            continue
        names.append(name)
    return names
