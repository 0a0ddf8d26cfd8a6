"""classification_report against scikit-learn (parity) and hand-computed values (golden)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as sklearn_metrics

from vlblocks.metrics import classification_report


def sklearn_reference(y_true, y_pred, labels=None) -> dict:
    out = {"accuracy": sklearn_metrics.accuracy_score(y_true, y_pred)}
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    out.update(precision=p, recall=r, f1=f, support=s)
    for avg in ("macro", "weighted"):
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        out.update({f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f})
    return out


def assert_matches(report, ref: dict) -> None:
    for key, value in ref.items():
        ours = getattr(report, key)
        if key == "support":
            np.testing.assert_array_equal(ours, value)
        else:
            np.testing.assert_allclose(ours, value, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_labels_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 60)), int(rng.integers(2, 8))
    y_true = rng.integers(0, c, size=n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, c, size=n))
    assert_matches(classification_report(y_true, y_pred), sklearn_reference(y_true, y_pred))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_missing_classes_and_num_classes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    # Class 2 never appears in y_true (precision 0 for its predictions), class 4 never predicted, 6..9 absent.
    y_true = rng.choice([0, 1, 3, 4, 5], size=40)
    y_pred = rng.choice([0, 1, 2, 3, 5], size=40)
    assert_matches(classification_report(y_true, y_pred), sklearn_reference(y_true, y_pred))
    report = classification_report(y_true, y_pred, num_classes=10)
    assert_matches(report, sklearn_reference(y_true, y_pred, labels=list(range(10))))
    assert report.precision.shape == (10,) and report.labels.tolist() == list(range(10))


def test_explicit_labels_subset_and_order() -> None:
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, 5, size=50), rng.integers(0, 5, size=50)
    labels = [3, 0, 1]  # unsorted subset: samples of classes 2 and 4 only count for the accuracy
    report = classification_report(y_true, y_pred, labels=labels)
    assert_matches(report, sklearn_reference(y_true, y_pred, labels=labels))
    assert report.labels.tolist() == labels
    # none of the true samples is in `labels`: weighted averages fall back to 0 like scikit-learn's
    absent = classification_report([0, 1], [1, 0], labels=[7])
    assert_matches(absent, sklearn_reference([0, 1], [1, 0], labels=[7]))


def test_string_labels_and_input_types() -> None:
    y_true = ["cat", "dog", "dog", "bird", "cat", "cat"]
    y_pred = ["cat", "cat", "dog", "dog", "cat", "bird"]
    assert_matches(classification_report(y_true, y_pred), sklearn_reference(y_true, y_pred))
    t, p = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1]
    ref = classification_report(t, p)
    for conv in (np.asarray, torch.tensor):
        other = classification_report(conv(t), conv(p))
        assert other.as_dict(per_class=True) == ref.as_dict(per_class=True)


def test_golden_values() -> None:
    # y_true 0 0 1 1 2, y_pred 0 1 1 1 0: class 0 tp1 fp1 fn1, class 1 tp2 fp1 fn0, class 2 tp0 fp0 fn1.
    report = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert report.accuracy == pytest.approx(3 / 5)
    np.testing.assert_allclose(report.precision, [1 / 2, 2 / 3, 0.0])
    np.testing.assert_allclose(report.recall, [1 / 2, 1.0, 0.0])
    np.testing.assert_allclose(report.f1, [1 / 2, 4 / 5, 0.0])
    np.testing.assert_array_equal(report.support, [2, 2, 1])
    assert report.f1_macro == pytest.approx((0.5 + 0.8) / 3)
    assert report.f1_weighted == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)
    d = report.as_dict()
    assert set(d) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"} | {
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    }
    json.dumps(report.as_dict(per_class=True))  # JSON-able


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        classification_report([0, 1], [0])
    with pytest.raises(ValueError, match="non-empty"):
        classification_report([], [])
    with pytest.raises(ValueError, match="must be 1-D"):
        classification_report(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        classification_report([0], [0], num_classes=0)
    with pytest.raises(ValueError, match=r"\[0, num_classes=2\)"):
        classification_report([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="at most one of num_classes and labels"):
        classification_report([0], [0], num_classes=2, labels=[0, 1])
    with pytest.raises(ValueError, match="labels must not repeat"):
        classification_report([0], [0], labels=[0, 0])
    with pytest.raises(ValueError, match="labels must be non-empty"):
        classification_report([0], [0], labels=[])
    with pytest.raises(ValueError, match="num_classes needs integer labels"):
        classification_report(["a"], ["a"], num_classes=2)
