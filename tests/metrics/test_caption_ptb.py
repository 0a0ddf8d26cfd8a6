"""The pure-Python PTB tokenizer against the real one (coco-caption's Stanford CoreNLP 3.4.1 jar, via Java)."""

from __future__ import annotations

import pytest

from tests.metrics.caption_peer import TRICKY, fakecap, java_ptb_lines, need_java
from vlblocks.metrics import ptb_tokenize, ptb_tokenize_batch
from vlblocks.metrics.ptb import PTB_PUNCTUATION, ptb_tokens


def _ours(lines: list[str]) -> list[str]:
    return [" ".join(t) for t in ptb_tokens("\n".join(lines))]


def test_tricky_captions_equal_the_jar():
    need_java()
    lines = TRICKY.read_text(encoding="utf-8").split("\n")
    assert len(lines) > 90
    java = java_ptb_lines(lines)
    ours = _ours(lines)
    bad = [(line, j, o) for line, j, o in zip(lines, java, ours) if j != o]
    assert not bad, bad[:5]


def test_every_fakecap_caption_equals_the_jar():
    need_java()
    refs, res = fakecap()
    lines = [a["caption"].replace("\n", " ") for a in refs["annotations"]] + [r["caption"] for r in res]
    java = java_ptb_lines(lines)
    ours = _ours(lines)
    bad = [(line, j, o) for line, j, o in zip(lines, java, ours) if j != o]
    assert len(lines) == 6005 and not bad, bad[:5]


def test_bmp_character_classes_equal_the_jar():
    """Every fifth BMP code point, alone and inside a word: letters, word characters, symbols and deleted characters
    as the jar has them (``ptb_charsets``; ``python -m tests.metrics.ptb_probe`` checks all of them)."""
    need_java()
    from tests.metrics.ptb_probe import probe

    kinds = probe(list(range(1, 0x10000, 5)))
    assert all(not cps for cps in kinds.values()), {k: [hex(c) for c in v[:10]] for k, v in kinds.items()}
    # control: Python's own letter table (a newer Unicode) would disagree with the jar
    assert not "\uab70".isalpha() or ptb_tokenize("x \uab70 x") == "x x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man's dog, (isn't) it?", "a man 's dog -lrb- is n't -rrb- it"),
        ('He said "hi" [ok] {x}.', "he said hi -lsb- ok -rsb- -lcb- x -rcb-"),
        ("I cannot go, gonna stay...", "i can not go gon na stay"),
        ("Mr. Smith paid $4.50 at 5:30 p.m.", "mr. smith paid $ 4.50 at 5:30 p.m."),
        ("ends with a.", "ends with a."),
        ("the U.S. The end", "the u.s. the end"),
        ("  café 😀\t naïve  ", "café naïve"),
        ("", ""),
        ("!!! ... --", "!!!"),
    ],
)
def test_golden_tokenisations(text, expected):
    assert ptb_tokenize(text) == expected


def test_brackets_survive_the_punctuation_filter_but_quotes_do_not():
    # coco-caption's filter lists "-LRB-" but the jar lower-cases first, so "-lrb-" stays; "``" is dropped
    assert "-LRB-" in PTB_PUNCTUATION and "``" in PTB_PUNCTUATION
    assert ptb_tokenize('("a")') == "-lrb- a -rrb-"
    assert ptb_tokenize("a") != ptb_tokenize("(a)")  # control


def test_batch_sees_the_next_caption_like_the_single_java_call():
    # an abbreviation before an upper-case line start also yields "." (dropped) -- and "co." stays either way
    out = ptb_tokenize_batch([["a big co.", "The next"], ["x\ny"]])
    assert out == [["a big co.", "the next"], ["x y"]]


def test_batch_keeps_nesting_and_empty_lists():
    assert ptb_tokenize_batch([]) == []
    assert ptb_tokenize_batch([[], ["A."]]) == [[], ["a."]]


def test_type_error():
    with pytest.raises(TypeError, match="text must be a str"):
        ptb_tokenize(3)  # type: ignore[arg-type]


def test_random_abbreviation_streams_equal_the_jar_through_the_batch_path():
    # plain captions go through the fast path, the others through the rules with the next line as context
    need_java()
    import random

    rng = random.Random(0)
    words = [
        "a",
        "A",
        "co",
        "etc",
        "Mr",
        "I",
        "gonna",
        "dog",
        "The",
        "Then",
        "x",
        ".",
        ",",
        "U.S.",
        "e.g.",
        "Ark",
    ]
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) + rng.choice(["", ".", " .", ",", ". "])
        for _ in range(2000)
    ]
    java = java_ptb_lines(lines)
    expected = [" ".join(t for t in j.split(" ") if t not in PTB_PUNCTUATION) for j in java]
    ours = ptb_tokenize_batch([lines])[0]
    bad = [(line, e, o) for line, e, o in zip(lines, expected, ours) if e != o]
    assert not bad, bad[:5]
    assert _ours(["Inc.", "The"])[0] != _ours(["Inc.", "the"])[0]  # control: the next line matters
