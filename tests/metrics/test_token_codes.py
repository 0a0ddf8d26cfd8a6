"""token_codes.ascii_token_ids: the same tokens as str.split() / str.split(" ") on random ASCII text (whitespace of
every kind, empty sentences, tokens of 8, 9, 16, 17 and more bytes), forced hash collisions, and the cases it leaves to Python."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vlblocks.metrics import token_codes
from vlblocks.metrics.token_codes import ascii_token_ids

PIECES = [
    "a",
    "b",
    "ab",
    "abcdefgh",
    "abcdefghi",
    "abcdefghij" * 3,
    "abcdefghijklmnop",  # 16 bytes: the longest pair of packed words
    "abcdefghijklmnoq",
    "abcdefghijklmnopq",  # 17 bytes: numbered by a dict
    " ",
    "  ",
    "\t",
    "\n",
    "\x1c",
    "\x0b",
    "x.y",
    "",
]


def by_python(sentences: list[str], sep: str | None) -> tuple[list[int], list[int], int]:
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(t, len(vocab)) for x in sentences for t in x.split(sep)]
    return ids, [len(x.split(sep)) for x in sentences], len(vocab)


def assert_same_tokens(sentences: list[str], sep: str | None) -> None:
    got = ascii_token_ids(sentences, sep=sep)
    assert got is not None
    ids, length, vocab = by_python(sentences, sep)
    assert got[1].tolist() == length and got[2] == vocab
    # the same partition of the tokens: a one-to-one map between our ids and first-seen ids
    assert len(set(zip(got[0].tolist(), ids))) == vocab == len(set(got[0].tolist()))
    assert got[0].min(initial=0) >= 0 and got[0].max(initial=-1) < vocab


@pytest.mark.parametrize("sep", [None, " "])
def test_random_ascii_text_splits_like_python(sep) -> None:
    rng = random.Random(0)
    for _ in range(400):
        sentences = [
            "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 6))
        ]
        assert_same_tokens(sentences, sep)


def test_every_ascii_whitespace_kind() -> None:
    sentences = [f"a{chr(c)}b" for c in range(1, 128)]
    assert_same_tokens(sentences, None)
    assert_same_tokens(sentences, " ")
    got = ascii_token_ids(["a\x1fb", "a\x7fb"])
    assert got[1].tolist() == [2, 1]  # \x1f splits (str.split agrees), DEL does not


def test_forced_hash_collisions_still_give_exact_ids(monkeypatch) -> None:
    monkeypatch.setattr(
        token_codes, "_GOLDEN", np.uint64(0)
    )  # every code hashes to slot 0: long probe chains
    assert_same_tokens(["a b c a", "b d e", "f a"], None)
    many = [" ".join(f"w{i}" for i in range(200))]
    assert ascii_token_ids(many) is None  # more distinct tokens than probing rounds: left to Python
    monkeypatch.undo()
    assert_same_tokens(many, None)


def test_cases_left_to_python() -> None:
    assert ascii_token_ids(["caf\u00e9 au lait"]) is None
    assert ascii_token_ids(["a\x00b"]) is None
    assert ascii_token_ids(["a b"], sep=",") is None
    assert ascii_token_ids([]) is None
