"""Classification report: accuracy and per-class / macro / weighted precision, recall and F1.

The numbers equal scikit-learn's ``accuracy_score`` and ``precision_recall_fscore_support(...,
zero_division=0)`` (``average=None``, ``"macro"`` and ``"weighted"``), computed with numpy only (scikit-learn is
a test dependency, not a runtime one). Definitions (Sokolova & Lapalme, "A systematic analysis of performance
measures for classification tasks", 2009): for class c, precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2 TP / (2 TP + FP + FN); a 0 / 0 is 0. Macro averages weight every class equally, weighted averages weight
class c by its support (its number of true samples).

Shape legend: N samples, C classes (labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["ClassificationReport", "classification_report"]


@dataclass
class ClassificationReport:
    """Result of ``classification_report``; per-class arrays have shape (C,), in the order of ``labels``."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    labels: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    f1: np.ndarray = field(repr=False)
    support: np.ndarray = field(repr=False)

    def as_dict(self, *, per_class: bool = False) -> dict[str, Any]:
        """The scalar metrics as plain floats (JSON-able); with ``per_class`` also the per-class lists."""
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "precision_macro": self.precision_macro,
            "recall_macro": self.recall_macro,
            "f1_macro": self.f1_macro,
            "precision_weighted": self.precision_weighted,
            "recall_weighted": self.recall_weighted,
            "f1_weighted": self.f1_weighted,
        }
        if per_class:
            out["labels"] = self.labels.tolist()
            out["precision"] = self.precision.tolist()
            out["recall"] = self.recall.tolist()
            out["f1"] = self.f1.tolist()
            out["support"] = self.support.tolist()
        return out


def _to_numpy(y: Any, name: str) -> np.ndarray:
    """Lists, tuples, numpy arrays or tensors -> a 1-D numpy array (N,) of labels of one kind (numbers or str)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
        y = (y.float() if y.dtype in (torch.bfloat16, torch.float16) else y).numpy()
    if not isinstance(y, list | tuple | np.ndarray):
        raise TypeError(
            f"{name} must be a list, tuple, numpy array or tensor of labels, got {type(y).__name__}"
        )
    try:
        arr = np.asarray(y)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(
            f"{name} must be a 1-D sequence of labels, got a ragged nested sequence ({e})"
        ) from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(arr.shape)}")
    if arr.dtype == object:
        if not all(isinstance(v, str) for v in arr):
            kinds = sorted({type(v).__name__ for v in arr})
            raise ValueError(f"{name} must hold labels of one kind (numbers or str), got {kinds}")
        arr = arr.astype(str)
    kind = arr.dtype.kind
    if kind == "S":
        raise TypeError(f"{name} holds bytes labels; decode them to str first")
    if kind not in "biufUMm":
        raise ValueError(f"{name} must hold int, float, bool or str labels, got dtype {arr.dtype}")
    if kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN")
        if np.isinf(arr).any():
            raise ValueError(f"{name} contains infinity")
        continuous = (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)  # not an int64 label
        if continuous.any():
            bad = arr[continuous][:3].tolist()
            raise ValueError(
                f"{name} holds continuous values such as {bad}; classification needs class labels"
            )
    return arr


def _same_kind(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Labels compared with each other must both be strings or both be numbers (like scikit-learn)."""
    kinds = ["str" if arr.dtype.kind == "U" else "numbers" for arr in (a, b)]
    if kinds[0] != kinds[1]:
        raise ValueError(f"mix of label types: {name_a} holds {kinds[0]}, {name_b} holds {kinds[1]}")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise in float64, 0 where den == 0 (scikit-learn's zero_division=0)."""
    den_safe = np.where(den == 0, 1, den).astype(np.float64)
    out = num.astype(np.float64) / den_safe
    out[den == 0] = 0.0
    return out


def _label_index(y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Position of every y in ``labels`` (N,), -1 for values not in ``labels``."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    pos = np.clip(np.searchsorted(sorted_labels, y), 0, len(labels) - 1)
    found = sorted_labels[pos] == y
    return np.where(found, order[pos], -1)


def _resolve_labels(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None, labels: Sequence[Any] | None
) -> np.ndarray:
    if num_classes is not None and labels is not None:
        raise ValueError("pass at most one of num_classes and labels, got both")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        both = np.concatenate([y_true, y_pred])
        if not np.issubdtype(both.dtype, np.integer):
            raise ValueError(f"num_classes needs integer labels, got dtype {both.dtype}")
        if both.min() < 0 or both.max() >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got range [{both.min()}, {both.max()}]"
            )
        return np.arange(num_classes)
    if labels is not None:
        arr = _to_numpy(labels, "labels")
        if arr.size == 0:
            raise ValueError("labels must be non-empty, got an empty sequence")
        _same_kind(arr, y_true, "labels", "y_true")
        if len(np.unique(arr)) != len(arr):
            raise ValueError(f"labels must not repeat, got {arr.tolist()}")
        return arr
    return np.unique(np.concatenate([y_true, y_pred]))


def classification_report(
    y_true: Sequence[Any] | np.ndarray | torch.Tensor,
    y_pred: Sequence[Any] | np.ndarray | torch.Tensor,
    *,
    num_classes: int | None = None,
    labels: Sequence[Any] | None = None,
) -> ClassificationReport:
    """Accuracy and per-class / macro / weighted precision, recall, F1 (scikit-learn, zero_division=0).

    Args:
        y_true: true labels (N,): list, numpy array or tensor.
        y_pred: predicted labels (N,).
        num_classes: score the classes 0..C-1 (classes absent from both arrays count as 0 in macro averages,
            like scikit-learn's ``labels=range(C)``).
        labels: explicit class list (C,) (scikit-learn's ``labels=``); samples of other classes are ignored by
            the per-class scores but still count for the accuracy. Default: the sorted union of y_true and y_pred.

    Returns:
        A ``ClassificationReport``: scalars are floats, per-class arrays have shape (C,).

    Raises:
        ValueError: wherever scikit-learn raises for the same input (a mix of str and number labels, NaN / inf,
            continuous values, labels that are not one kind, complex, empty or unequal-length inputs), and also for
            ``labels`` of another kind than the targets (str against numbers), which scikit-learn silently scores 0.
        TypeError: inputs that are not a list / tuple / array / tensor, and bytes labels.
    """
    yt = _to_numpy(y_true, "y_true")
    yp = _to_numpy(y_pred, "y_pred")
    _same_kind(yt, yp, "y_true", "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {len(yt)} and {len(yp)}")
    if yt.size == 0:
        raise ValueError("y_true must be non-empty, got 0 samples")
    label_arr = _resolve_labels(yt, yp, num_classes, labels)
    num = len(label_arr)

    idx_true = _label_index(yt, label_arr)  # (N,)
    idx_pred = _label_index(yp, label_arr)  # (N,)
    hit = (idx_true == idx_pred) & (idx_true >= 0)
    tp = np.bincount(idx_true[hit], minlength=num)  # (C,)
    true_sum = np.bincount(idx_true[idx_true >= 0], minlength=num)  # (C,)
    pred_sum = np.bincount(idx_pred[idx_pred >= 0], minlength=num)  # (C,)

    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    f1 = _divide(2.0 * tp, (true_sum + pred_sum).astype(np.float64))

    def weighted(values: np.ndarray) -> float:
        return float(np.average(values, weights=true_sum)) if true_sum.sum() > 0 else 0.0

    return ClassificationReport(
        accuracy=float(np.average(yt == yp)),
        precision_macro=float(np.average(precision)),
        recall_macro=float(np.average(recall)),
        f1_macro=float(np.average(f1)),
        precision_weighted=weighted(precision),
        recall_weighted=weighted(recall),
        f1_weighted=weighted(f1),
        labels=label_arr,
        precision=precision,
        recall=recall,
        f1=f1,
        support=true_sum,
    )
