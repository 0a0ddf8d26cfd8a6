"""VQA accuracy: golden values hand-computed from the official evaluator's rules (GT-Vision-Lab vqaEval.py)."""

from __future__ import annotations

import json

import pytest

from vlblocks.metrics import (
    normalize_vqa_answer,
    vqa_accuracy,
    vqa_accuracy_by_type,
    vqa_accuracy_per_question,
    vqa_question_accuracy,
)


def humans(*groups: tuple[str, int]) -> list[str]:
    """Ten human answers from (answer, count) groups."""
    out = [a for a, n in groups for _ in range(n)]
    assert len(out) == 10
    return out


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("yes", "yes"),
        ("Yes.", "yes"),  # trailing period removed, lower-cased
        ("yes ?", "yes"),  # punctuation touching a space is deleted
        ("black/white", "black white"),  # punctuation not touching a space becomes a space
        ("black / white", "black white"),  # ... and is deleted when it touches one (split() eats the gap)
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # only none..ten are mapped
        ("a dog", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("Im", "im"),  # the capitalised table keys never match after lower-casing
        ("somebody'd", "somebodyd"),  # the evaluator's table maps this one backwards
        ("don't", "don't"),  # the apostrophe is not a punctuation character of the current evaluator
        ("1.5", "1.5"),  # a decimal point is kept
        ("1.5.", "1.5"),
        ("5.", "5"),
        (".5", ".5"),
        ("1,000", "1000"),  # digit-comma-digit: all punctuation is deleted, not spaced
        ("red,white", "red white"),
        ("1,000 red,white", "1000 redwhite"),
        ("(left)", "left"),
        ("x-ray", "x ray"),
        ("e.g.", "eg"),
        ("  multiple\tspaces\nhere ", "multiple spaces here"),
        ("a.", ""),  # "a" is an article
    ],
)
def test_normalize_vqa_answer(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_normalize_removes_at_most_32_periods() -> None:
    # The evaluator passes re.UNICODE (32) as the ``count`` of Pattern.sub.
    out = normalize_vqa_answer("x." * 40)
    assert out == "x" * 32 + "x." * 8


def test_normalize_type_error() -> None:
    with pytest.raises(TypeError, match="text must be a str"):
        normalize_vqa_answer(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ leave-one-human-out accuracy


@pytest.mark.parametrize("mode", ["official", "always"])
@pytest.mark.parametrize(
    ("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0)]
)
def test_matching_humans(mode: str, matches: int, expected: float) -> None:
    # m matching humans: the m leave-outs of a matching human see m-1 matches, the others see m:
    # (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10 -> 0, 0.3, 0.6, 0.9, 1, 1.
    answers = humans(("cat", matches), ("dog", 10 - matches))
    assert vqa_question_accuracy("cat", answers, normalize=mode) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mode", ["official", "always"])
def test_all_humans_agree(mode: str) -> None:
    assert vqa_accuracy(["yes", "no"], [["yes"] * 10, ["yes"] * 10], normalize=mode) == 1.0 / 2


@pytest.mark.parametrize(
    ("pred", "answers", "expected"),
    [
        ("yes.", humans(("yes", 3), ("no", 7)), 0.9),
        ("Yes", humans(("yes", 2), ("no", 8)), 0.6),
        ("two", humans(("2", 4), ("3", 6)), 1.0),
        ("a dog", humans(("dog", 2), ("cat", 8)), 0.6),
        ("dont", humans(("don't", 3), ("no", 7)), 0.9),
        ("1.5", humans(("1.5", 3), ("2", 7)), 0.9),
        ("1.5.", humans(("1.5", 3), ("2", 7)), 0.9),
        ("1,000", humans(("1000", 3), ("100", 7)), 0.9),
        ("black/white", humans(("black and white", 5), ("black white", 1), ("gray", 4)), 0.3),
    ],
)
def test_normalised_matches(pred: str, answers: list[str], expected: float) -> None:
    assert vqa_question_accuracy(pred, answers, normalize="official") == pytest.approx(expected, abs=1e-12)
    assert vqa_question_accuracy(pred, answers, normalize="always") == pytest.approx(expected, abs=1e-12)


def test_humans_are_normalised_when_they_disagree() -> None:
    # The humans' "Two" / "the dog" are normalised too, so the raw prediction "2" / "dog" matches them.
    answers = humans(("Two", 2), ("two", 2), ("3", 6))
    assert vqa_question_accuracy("2", answers) == pytest.approx(1.0)
    assert vqa_question_accuracy("dog", humans(("the dog", 3), ("cat", 7))) == pytest.approx(0.9)


def test_official_vs_always() -> None:
    # Ten identical humans: the current evaluator compares the (stripped) raw prediction, the 2017 one normalises it.
    same = ["yes"] * 10
    for pred in ("Yes", "yes.", "a yes"):
        assert vqa_question_accuracy(pred, same, normalize="official") == 0.0
        assert vqa_question_accuracy(pred, same, normalize="always") == 1.0
    # Both strip whitespace first.
    assert vqa_question_accuracy(" yes\n", same, normalize="official") == 1.0
    assert vqa_question_accuracy("\tyes ", same, normalize="always") == 1.0
    # Humans disagree: the 2017 evaluator only punctuation-processes the humans (no number words / articles).
    answers = humans(("two", 4), ("3", 6))
    assert vqa_question_accuracy("2", answers, normalize="official") == pytest.approx(1.0)
    assert vqa_question_accuracy("2", answers, normalize="always") == 0.0
    # ... and does not strip them, nor normalise them when they agree.
    assert vqa_question_accuracy("yes", ["yes "] * 10, normalize="official") == 1.0
    assert vqa_question_accuracy("yes", ["yes "] * 10, normalize="always") == 0.0


def test_per_question_and_mean() -> None:
    preds = ["cat", "cat", "2", "yes"]
    answers = [
        humans(("cat", 1), ("dog", 9)),
        humans(("cat", 2), ("dog", 8)),
        humans(("two", 3), ("3", 7)),
        ["no"] * 10,
    ]
    per = vqa_accuracy_per_question(preds, answers)
    assert per == pytest.approx([0.3, 0.6, 0.9, 0.0], abs=1e-12)
    assert vqa_accuracy(preds, answers) == pytest.approx(1.8 / 4, abs=1e-12)
    # batched equals one by one
    assert per == [vqa_question_accuracy(p, a) for p, a in zip(preds, answers)]
    # one return type: vqa_accuracy is always a float, it has no per_question flag any more
    assert type(vqa_accuracy(preds[:1], answers[:1])) is float
    with pytest.raises(TypeError, match="per_question"):
        vqa_accuracy(preds, answers, per_question=True)  # type: ignore[call-arg]


def test_accuracy_by_type() -> None:
    preds = ["yes", "no", "2", "red"]
    answers = [["yes"] * 10, ["yes"] * 10, humans(("2", 2), ("3", 8)), humans(("red", 1), ("blue", 9))]
    types = ["yes/no", "yes/no", "number", "other"]
    out = vqa_accuracy_by_type(preds, answers, types)
    assert out == pytest.approx({"yes/no": 0.5, "number": 0.6, "other": 0.3}, abs=1e-12)
    assert list(out) == ["yes/no", "number", "other"]


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        vqa_accuracy(["a", "b"], [["a"] * 10])
    with pytest.raises(ValueError, match=r"answers\[1\] must be a non-empty"):
        vqa_accuracy(["a", "b"], [["a"] * 10, []])
    with pytest.raises(ValueError, match=r"answers\[0\] must be a non-empty list"):
        vqa_accuracy(["a"], ["a"])
    with pytest.raises(ValueError, match="normalize must be one of"):
        vqa_accuracy(["a"], [["a"] * 10], normalize="sometimes")
    with pytest.raises(ValueError, match="normalize must be one of"):
        vqa_question_accuracy("a", ["a"], normalize="never")
    with pytest.raises(ValueError, match="predictions must be non-empty"):
        vqa_accuracy([], [])
    with pytest.raises(TypeError, match="predictions must be a sequence of str"):
        vqa_accuracy("abc", [["a"]] * 3)
    with pytest.raises(TypeError, match=r"predictions\[0\] must be a str"):
        vqa_accuracy([1], [["a"] * 10])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="types must have the same length"):
        vqa_accuracy_by_type(["a"], [["a"] * 10], ["x", "y"])


def test_real_vqav2_fixture(refdata) -> None:
    root = refdata / "vqav2-fixture"
    anns = json.loads((root / "annotations.json").read_text())["annotations"]
    questions = {
        q["question_id"]: q["question"]
        for q in json.loads((root / "questions.json").read_text())["questions"]
    }
    ids = [a["question_id"] for a in anns]
    answers = [[x["answer"] for x in a["answers"]] for a in anns]
    assert ids == [458752000, 458752001, 458752002] and all(len(a) == 10 for a in answers)
    # Humans: q0 net x6 / netting / mesh / pitcher / orange; q1 pitcher x9 / catcher; q2 orange x10.
    assert vqa_accuracy_per_question(["net", "pitcher", "orange"], answers) == [1.0, 1.0, 1.0]
    per = vqa_accuracy_per_question(["netting", "catcher", "orange"], answers)
    assert per == pytest.approx([0.3, 0.3, 1.0], abs=1e-12)
    assert vqa_accuracy(["netting", "catcher", "orange"], answers) == pytest.approx(1.6 / 3, abs=1e-12)
    assert vqa_accuracy(["pitcher", "baseball", "blue"], answers) == pytest.approx(0.1, abs=1e-12)
    # Case / punctuation: normalised where the humans disagree (q0, q1), not where they all agree (q2).
    official = vqa_accuracy_per_question(["The net.", "Pitcher", "Orange"], answers)
    always = vqa_accuracy_per_question(["The net.", "Pitcher", "Orange"], answers, normalize="always")
    assert official == [1.0, 1.0, 0.0] and always == [1.0, 1.0, 1.0]
    types = [" ".join(questions[i].split()[:2]) for i in ids]
    by_type = vqa_accuracy_by_type(["netting", "catcher", "orange"], answers, types)
    assert by_type == pytest.approx({"What is": 0.3, "What position": 0.3, "What color": 1.0}, abs=1e-12)
