"""classification_report raises wherever scikit-learn raises for the same input (issue 7, item 9).

Three tables: inputs both reject (the case checks scikit-learn really raises, then that vlblocks raises a clear
error), inputs vlblocks rejects although scikit-learn returns numbers (they would be silently wrong), and edge cases
both accept, where the numbers must agree (the control: the checks do not refuse valid labels).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as sklearn_metrics
import torch

from vlblocks.metrics import classification_report


def sklearn_report(yt, yp, labels=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = sklearn_metrics.accuracy_score(yt, yp)
        per_class = sklearn_metrics.precision_recall_fscore_support(
            yt, yp, labels=labels, average=None, zero_division=0
        )
        macro = sklearn_metrics.precision_recall_fscore_support(
            yt, yp, labels=labels, average="macro", zero_division=0
        )
        weighted = sklearn_metrics.precision_recall_fscore_support(
            yt, yp, labels=labels, average="weighted", zero_division=0
        )
    return acc, per_class, macro, weighted


def sklearn_raises(yt, yp, labels=None) -> bool:
    try:
        sklearn_report(yt, yp, labels)
    except (ValueError, TypeError):
        return True
    return False


NAN = float("nan")
BOTH_REJECT = {
    # id: (y_true, y_pred, labels, error, message)
    "str vs numbers": ([1, 2, 3], ["a", "b", "c"], None, ValueError, "mix of label types"),
    "numeric strings vs numbers": (["1", "2"], [1, 2], None, ValueError, "mix of label types"),
    "NaN in y_true": ([0, 1, NAN], [0, 1, 1], None, ValueError, "y_true contains NaN"),
    "NaN in y_pred": ([0, 1, 1], [0, 1, NAN], None, ValueError, "y_pred contains NaN"),
    "NaN tensor": (torch.tensor([0.0, NAN]), torch.tensor([0.0, 1.0]), None, ValueError, "contains NaN"),
    "inf": ([0, 1, float("inf")], [0, 1, 1], None, ValueError, "y_true contains infinity"),
    "continuous y_true": ([0.5, 1.5, 2.0], [0.5, 1.5, 2.0], None, ValueError, "continuous values"),
    "continuous y_pred": ([0, 1, 2], [0.5, 1.0, 2.0], None, ValueError, "y_pred holds continuous"),
    "continuous float16 tensor": (
        torch.tensor([0.5, 1.0], dtype=torch.float16),
        torch.tensor([0.0, 1.0], dtype=torch.float16),
        None,
        ValueError,
        "continuous",
    ),
    "float too large for int64": ([1e20, 0.0], [0, 0], None, ValueError, "continuous"),
    "None in labels list": ([None, 1], [1, 1], None, ValueError, "one kind"),
    "all None": ([None, None], [None, None], None, ValueError, "one kind"),
    "object array of ints": (
        np.array([1, 2], dtype=object),
        np.array([1, 2], dtype=object),
        None,
        ValueError,
        "one kind",
    ),
    "object array with NaN": (
        np.array([1, NAN], dtype=object),
        np.array([1, 2], dtype=object),
        None,
        ValueError,
        "one kind",
    ),
    "complex": (np.array([1 + 1j, 2]), np.array([1, 2]), None, ValueError, "dtype complex"),
    "bytes": ([b"a", b"b"], [b"a", b"a"], None, TypeError, "bytes labels"),
    "empty": ([], [], None, ValueError, "non-empty"),
    "length mismatch": ([0, 1], [0, 1, 1], None, ValueError, "same length"),
    "scalar": (1, 1, None, TypeError, "must be a list"),
    "dict": ({0: 1}, {0: 1}, None, TypeError, "must be a list"),
    "ragged nested lists": ([[0, 1], [1]], [[0, 1], [1]], None, ValueError, "ragged"),
    "2-D labels": ([0, 1], [0, 1], [[0], [1]], ValueError, "labels must be 1-D"),
}

# scikit-learn 1.9 returns numbers for these; they are mistakes (a label that can never match), so vlblocks raises
ONLY_VLBLOCKS_REJECTS = {
    "str labels vs int targets": ([0, 1, 2], [0, 1, 1], ["a", "b"], "labels holds str, y_true holds numbers"),
    "int labels vs str targets": (["a", "b"], ["a", "a"], [0, 1], "labels holds numbers, y_true holds str"),
    "numeric-string labels vs ints": ([0, 1], [0, 1], ["0", "1"], "mix of label types"),
    "continuous labels": ([0, 1, 2], [0, 1, 1], [0.5, 1], "labels holds continuous"),
    "column vector": (np.array([[0], [1]]), np.array([[0], [1]]), None, "y_true must be 1-D"),
    "repeated labels": ([0, 1], [0, 1], [0, 0], "must not repeat"),
    "empty labels": ([0, 1], [0, 1], [], "labels must be non-empty"),
}

BOTH_ACCEPT = {
    "bools": ([True, False, True], [True, True, False], None),
    "bools vs ints": ([True, False, True], [1, 0, 0], None),
    "integral floats": ([0.0, 1.0, 2.0], [0.0, 1.0, 1.0], None),
    "mixed list becomes str": ([1, 2, "a"], [1, "a", "a"], None),
    "labels partly absent": ([0, 1, 2, 2], [0, 1, 1, 2], [1, 5]),
    "labels all absent": ([0, 1, 2], [0, 1, 1], [5, 6]),
    "negative labels": ([-1, 0, 1, 1], [-1, 1, 1, 0], None),
    "uint8 vs int64": (np.array([0, 1, 1], dtype=np.uint8), np.array([0, 1, 0]), None),
    "one class": ([1, 1], [1, 1], None),
    "bool labels vs ints": ([0, 1, 1], [0, 1, 0], [True, False]),
    "str": (["cat", "dog", "dog"], ["dog", "dog", "cat"], ["dog", "cat"]),
}


@pytest.mark.parametrize("case", list(BOTH_REJECT))
def test_raises_where_sklearn_raises(case) -> None:
    yt, yp, labels, error, message = BOTH_REJECT[case]
    assert sklearn_raises(yt, yp, labels), f"scikit-learn accepts {case!r}: the table is wrong"
    with pytest.raises(error, match=message):
        classification_report(yt, yp, labels=labels)


@pytest.mark.parametrize("case", list(ONLY_VLBLOCKS_REJECTS))
def test_raises_where_sklearn_silently_scores(case) -> None:
    yt, yp, labels, message = ONLY_VLBLOCKS_REJECTS[case]
    with pytest.raises(ValueError, match=message):
        classification_report(yt, yp, labels=labels)


@pytest.mark.parametrize("case", list(BOTH_ACCEPT))
def test_valid_edge_cases_agree_with_sklearn(case) -> None:
    yt, yp, labels = BOTH_ACCEPT[case]
    acc, per_class, macro, weighted = sklearn_report(yt, yp, labels)
    ours = classification_report(yt, yp, labels=labels)
    assert ours.accuracy == pytest.approx(acc)
    for got, want in zip((ours.precision, ours.recall, ours.f1, ours.support), per_class):
        np.testing.assert_allclose(got, want)
    assert (ours.precision_macro, ours.recall_macro, ours.f1_macro) == pytest.approx(macro[:3])
    assert (ours.precision_weighted, ours.recall_weighted, ours.f1_weighted) == pytest.approx(weighted[:3])
