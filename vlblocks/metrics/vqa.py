"""VQA accuracy, as computed by the official VQA evaluator (GT-Vision-Lab/VQA, ``vqaEval.py``).

Follows Antol et al., "VQA: Visual Question Answering" (ICCV 2015) and Goyal et al., "Making the V in VQA
Matter" (CVPR 2017). A predicted answer is scored against the ten human answers of a question: for each of the
ten humans, leave that human out and take ``min(1, #other humans who gave the prediction / 3)``; the question's
accuracy is the mean of the ten values, and the dataset accuracy is the mean over questions.

Answers are compared after the evaluator's normalisation (``normalize_vqa_answer``): newlines / tabs become
spaces, the text is stripped, punctuation is removed or replaced by a space, periods that are not decimal points
are dropped, the text is lower-cased, number words ``none``..``ten`` become digits, the articles a / an / the
are dropped and unpunctuated contractions get their apostrophe back (``dont`` -> ``don't``).

Two evaluator versions differ in *when* they normalise (``normalize=``):

- ``"official"`` (current GT-Vision-Lab master): every answer is only whitespace-stripped; the punctuation and
  digit / article processing is applied to the ten human answers *and* to the prediction only when the humans
  do not all agree. When all ten answers are identical the prediction must match them exactly (after strip).
- ``"always"`` (the 2017 release, copied by LAVIS / BLIP / ALBEF): the prediction is always normalised; the
  human answers are only punctuation-processed (no digit / article step, no strip), and only when they disagree.

Shape legend: N questions, 10 human answers per question (any non-zero number is accepted).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from functools import lru_cache

__all__ = [
    "normalize_vqa_answer",
    "vqa_accuracy",
    "vqa_accuracy_by_type",
    "vqa_accuracy_per_question",
    "vqa_question_accuracy",
]

_NORMALIZE_MODES = ("official", "always")

# Punctuation characters handled by the evaluator (current version: the apostrophe and the colon are kept).
_PUNCT = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# A comma between two digits ("1,000") switches every punctuation character to plain removal.
_COMMA_IN_DIGITS = re.compile(r"(\d)(,)(\d)")
# A period not followed by a digit. The evaluator writes "(?!<=\d)(\.)(?!\d)": its first group is a (never
# matching) negative look-ahead for the text "<=digit", not a look-behind, so "5." loses its period while "1.5"
# and ".5" keep theirs.
_PERIOD = re.compile(r"\.(?!\d)")
# The evaluator passes re.UNICODE (= 32) as the positional ``count`` of ``Pattern.sub``: at most 32 periods go.
_PERIOD_MAX_SUBS = 32

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})


def _build_contractions() -> dict[str, str]:
    """The evaluator's contraction table: unpunctuated (or half punctuated) word -> word with apostrophes.

    Written as ``written=restored`` pairs. It keeps the evaluator's quirks: ``somebody'd`` maps to
    ``somebodyd``, a few entries map a word to itself, and the capitalised keys (``Im``, ``Ive``, ``Id've``,
    ``I'dve``) can never match because the text is lower-cased first.
    """
    pairs = """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
    howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
    it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
    mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
    oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
    shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
    shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
    somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
    someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
    somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
    thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
    theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
    twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
    whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've
    whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
    whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
    wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
    y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
    youre=you're youve=you've
    """
    table = {}
    for pair in pairs.split():
        written, restored = pair.split("=")
        table[written] = restored
    return table


_CONTRACTIONS = _build_contractions()


def _clean_whitespace(text: str) -> str:
    """Newlines and tabs -> spaces, then strip (the evaluator's first step on every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """The evaluator's punctuation step.

    Each punctuation character is deleted when it touches a space somewhere in the text (``"yes ?"``) or when the
    text holds a digit-comma-digit group (``"1,000"``), and replaced by a space otherwise (``"black/white"`` ->
    ``"black white"``). The conditions are tested on the input text, character by character. Periods that are
    not decimal points are then removed.
    """
    has_digit_comma = _COMMA_IN_DIGITS.search(text) is not None
    out = text
    for p in _PUNCT:
        if has_digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_SUBS)


def _process_digit_article(text: str) -> str:
    """The evaluator's word step: lower-case, number words -> digits, drop articles, restore contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


@lru_cache(maxsize=65536)
def _normalize_core(text: str) -> str:
    return _process_digit_article(_process_punctuation(text))


def normalize_vqa_answer(text: str) -> str:
    """Normalise one answer exactly like the official VQA evaluator does.

    Steps: newline / tab -> space, strip, punctuation processing, then digit / article processing.

    >>> normalize_vqa_answer("Two dogs.")
    '2 dogs'
    >>> normalize_vqa_answer("dont")
    "don't"

    Args:
        text: a raw answer string.

    Returns:
        The normalised answer.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _normalize_core(_clean_whitespace(text))


def _leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over humans i of min(1, #(j != i with answers[j] == prediction) / 3), summed in the evaluator's order."""
    matches = [a == prediction for a in answers]
    total = sum(matches)
    accs = [min(1, float(total - m) / 3) for m in matches]
    return float(sum(accs)) / len(accs)


def vqa_question_accuracy(prediction: str, answers: Sequence[str], *, normalize: str = "official") -> float:
    """VQA accuracy of one prediction against one question's human answers.

    Args:
        prediction: the predicted answer (raw text).
        answers: the human answers (10 in VQA v1 / v2).
        normalize: ``"official"`` or ``"always"`` (see the module docstring).

    Returns:
        The accuracy in [0, 1]: 0, 0.3, 0.6, 0.9 or 1 with ten answers.
    """
    if normalize == "official":
        gts = [_clean_whitespace(a) for a in answers]
        pred = _clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [_normalize_core(a) for a in gts]
            pred = _normalize_core(pred)
    elif normalize == "always":
        pred = normalize_vqa_answer(prediction)
        gts = list(answers)
        if len(set(gts)) > 1:
            gts = [_process_punctuation(a) for a in gts]
    else:
        raise ValueError(f"normalize must be one of {_NORMALIZE_MODES}, got {normalize!r}")
    return _leave_one_out_accuracy(pred, gts)


def _validate(predictions: Sequence[str], answers: Sequence[Sequence[str]], normalize: str) -> None:
    if normalize not in _NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {_NORMALIZE_MODES}, got {normalize!r}")
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of str, got a single str")
    for name, value in (("predictions", predictions), ("answers", answers)):
        if not _list_like(value):
            raise TypeError(
                f"{name} must be a list (or tuple) of one entry per question, got {type(value).__name__}"
            )
    if len(predictions) != len(answers):
        raise ValueError(
            f"predictions and answers must have the same length, got {len(predictions)} and {len(answers)}"
        )
    if len(predictions) == 0:
        raise ValueError("predictions must be non-empty, got 0 predictions")
    for i, (pred, gts) in enumerate(zip(predictions, answers)):
        if not isinstance(pred, str):
            raise TypeError(f"predictions[{i}] must be a str, got {type(pred).__name__}")
        if gts is None or isinstance(gts, str) or (_list_like(gts) and len(gts) == 0):
            raise ValueError(f"answers[{i}] must be a non-empty list of str, got {gts!r}")
        if not _list_like(gts):
            raise TypeError(
                f"answers[{i}] must be a list of str (one per human, repeats kept), got {type(gts).__name__}"
            )
        if not all(isinstance(a, str) for a in gts):  # numpy str_ is a str
            bad = next(a for a in gts if not isinstance(a, str))
            raise TypeError(f"answers[{i}] must hold str answers, got {type(bad).__name__} {bad!r}")


def _list_like(value: object) -> bool:
    """A list, tuple, other Sequence or 1-D+ numpy array: not a str, dict, set or one-shot iterator."""
    if isinstance(value, (str, bytes, dict, set, frozenset)):
        return False
    if type(value).__module__ == "numpy":
        return getattr(value, "ndim", 0) >= 1
    return isinstance(value, Sequence)


def vqa_accuracy_per_question(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    normalize: str = "official",
) -> list[float]:
    """The N per-question VQA accuracies (the official leave-one-human-out formula), in input order.

    Args:
        predictions: N predicted answers.
        answers: N lists of human answers (N x 10 for VQA v2).
        normalize: ``"official"`` (current official evaluator) or ``"always"`` (2017 evaluator / LAVIS).

    Returns:
        N accuracies in [0, 1].
    """
    _validate(predictions, answers, normalize)
    return [vqa_question_accuracy(p, a, normalize=normalize) for p, a in zip(predictions, answers)]


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    normalize: str = "official",
) -> float:
    """Mean VQA accuracy of N predictions (per-question values: `vqa_accuracy_per_question`).

    Args:
        predictions: N predicted answers.
        answers: N lists of human answers (N x 10 for VQA v2).
        normalize: ``"official"`` (current official evaluator) or ``"always"`` (2017 evaluator / LAVIS).

    Returns:
        The mean accuracy as a fraction in [0, 1] (the evaluator prints ``100 *`` this, rounded to 2 digits).
    """
    accs = vqa_accuracy_per_question(predictions, answers, normalize=normalize)
    return float(sum(accs)) / len(accs)


def vqa_accuracy_by_type(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    types: Sequence[Hashable],
    *,
    normalize: str = "official",
) -> dict[Hashable, float]:
    """Mean VQA accuracy per question / answer type (e.g. ``"yes/no"``, ``"number"``, ``"other"``).

    Args:
        predictions: N predicted answers.
        answers: N lists of human answers.
        types: N type labels.
        normalize: as in ``vqa_accuracy``.

    Returns:
        ``{type: mean accuracy in [0, 1]}``, in order of first appearance.
    """
    if len(types) != len(predictions):
        raise ValueError(
            f"types must have the same length as predictions ({len(predictions)}), got {len(types)}"
        )
    accs = vqa_accuracy_per_question(predictions, answers, normalize=normalize)
    groups: dict[Hashable, list[float]] = {}
    for t, acc in zip(types, accs):
        groups.setdefault(t, []).append(acc)
    return {t: float(sum(v)) / len(v) for t, v in groups.items()}
