"""Argument checks shared by every module: one function, and one wording, per kind of mistake.

Each check raises ``ValueError`` (wrong value) or ``TypeError`` (wrong kind of object) with a message that names the
argument, what was expected and what was received, e.g. ``dim must be a positive int, got 0``. Modules import these
instead of writing their own, so the same mistake reads the same everywhere. This module imports only torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "check_choice",
    "check_dropout",
    "check_finite_number",
    "check_int",
    "check_nonneg_int",
    "check_positive_int",
    "check_positive_number",
    "check_probability",
    "check_tensor",
    "is_int",
    "is_number",
]


def is_int(value: object) -> bool:
    """True for a Python int (or 0-d integer-like such as numpy ints), never for a bool."""
    return isinstance(value, int) and not isinstance(value, bool) or _is_numpy_int(value)


def is_number(value: object) -> bool:
    """True for an int or float (numpy scalars included), never for a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or _is_numpy_int(value) or _is_numpy_float(value)


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (either bound optional); bools refused."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)  # type: ignore[arg-type]
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            bound = f">= {low}"
        elif low is None:
            bound = f"<= {high}"
        else:
            bound = f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return value


def check_positive_int(name: str, value: object) -> int:
    """`value` as an int > 0; bools refused (``heads=True`` is a mistake, not 1 head)."""
    if not is_int(value) or int(value) <= 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_nonneg_int(name: str, value: object) -> int:
    """`value` as an int >= 0; bools refused."""
    if not is_int(value) or int(value) < 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_finite_number(name: str, value: object) -> float:
    """`value` as a finite float (NaN and +-inf refused); bools refused."""
    if not is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_positive_number(name: str, value: object) -> float:
    """`value` as a finite float > 0."""
    if not is_number(value) or not (math.isfinite(float(value)) and float(value) > 0):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_probability(
    name: str, value: object, *, closed_high: bool = True, closed_low: bool = True
) -> float:
    """`value` as a float in [0, 1] (ends open where asked)."""
    lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
    ok = is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v >= 0 if closed_low else v > 0) and (v <= 1 if closed_high else v < 1)
    if not ok:
        raise ValueError(f"{name} must be a number in {lo}0, 1{hi}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_dropout(name: str, value: object) -> float:
    """A dropout probability: a number in [0, 1)."""
    return check_probability(name, value, closed_high=False)


def check_choice(name: str, value: object, choices: Sequence[object]) -> object:
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: str | None = None,
    shape: str | None = None,
    nonempty: bool = True,
) -> torch.Tensor:
    """`value` if it is a tensor with `ndim` dims (one or several allowed) of kind `dtype`.

    `dtype` is ``"float"``, ``"int"`` (integer, not bool) or ``"bool"``; `shape` is the expected shape written for
    the message, e.g. ``"(B, N, 64)"``. An empty batch (first dim 0) is refused unless ``nonempty=False``.
    """
    expected = shape or (f"{ndim}-D" if ndim is not None else "a tensor")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {expected}, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if dtype == "float" and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if dtype == "int" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    if dtype == "bool" and value.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {value.dtype}")
    if nonempty and value.dim() > 0 and value.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one item, got an empty batch {tuple(value.shape)}")
    return value


def check_index(
    name: str, value: object, *, size: int, what: str, length: int | None = None, per: str = "row"
) -> torch.Tensor:
    """`value` if it is a 1-D integer tensor (of `length` entries when given, one per `per`) whose entries all lie
    in [0, size); negative entries are refused, never counted from the end. `what` names one of the `size` things
    in the message, e.g. ``"one of the 3 images"``."""
    check_tensor(name, value, dtype="int", nonempty=False)
    expected = "(B,)" if length is None else f"({length},) (one per {per})"
    if value.dim() != 1 or (length is not None and value.shape[0] != length):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if value.numel():
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name} must lie in [0, {size}) ({what}), got {low if low < 0 else high}")
    return value


def _is_numpy_int(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu"  # type: ignore[attr-defined]


def _is_numpy_float(value: object) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind == "f"  # type: ignore[attr-defined]
