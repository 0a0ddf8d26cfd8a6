"""caption_kernels.build_ngram_table: counts equal a Counter written out by hand, and the radix (16-bit token ids)
and int64 sort paths give the same table."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import vlblocks.metrics.caption_kernels as K

SENTENCES = ["a dog a dog runs", "the dog", "", "a a a a", "runs the dog a dog", "x"]


def counts_by_hand(sentences: list[str], n: int) -> Counter:
    out: Counter = Counter()
    for s, text in enumerate(sentences):
        words = text.split()
        for k in range(1, n + 1):
            for i in range(len(words) - k + 1):
                out[(s, tuple(words[i : i + k]))] += 1
    return out


def signatures_by_hand(sentences: list[str], n: int) -> list:
    """Per n-gram: (order, its (sentence, count) rows), sorted: what a table must hold, whatever its gram ids."""
    rows: dict[tuple[str, ...], set] = {}
    for (s, gram), c in counts_by_hand(sentences, n).items():
        rows.setdefault(gram, set()).add((s, c))
    return sorted((len(gram) - 1, sorted(r)) for gram, r in rows.items())


def signatures(table: K.NgramTable) -> list:
    rows: dict[int, set] = {}
    for s, g, c in zip(table.sent.tolist(), table.gram.tolist(), table.count.tolist()):
        rows.setdefault(g, set()).add((s, c))
    return sorted((int(table.order[g]), sorted(r)) for g, r in rows.items())


@pytest.mark.parametrize("radix_vocab", [2**16, 0])  # 0: every vocabulary takes the int64 path
def test_table_counts_equal_a_counter(monkeypatch, radix_vocab) -> None:
    monkeypatch.setattr(K, "_RADIX_VOCAB", radix_vocab)
    table = K.build_ngram_table(SENTENCES, 4)
    assert table.length.tolist() == [len(s.split()) for s in SENTENCES]
    assert signatures(table) == signatures_by_hand(SENTENCES, 4)
    assert table.num_grams == len({gram for _, gram in counts_by_hand(SENTENCES, 4)})
    key = table.gram * len(SENTENCES) + table.sent
    assert np.all(np.diff(key) > 0)  # rows sorted by gram then sentence, each pair once


def test_both_sort_paths_give_the_same_table(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    sentences = [" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(200)]
    radix = K.build_ngram_table(sentences, 4)
    monkeypatch.setattr(K, "_RADIX_VOCAB", 0)
    wide = K.build_ngram_table(sentences, 4)
    for name in ("sent", "gram", "count", "order", "length"):
        assert np.array_equal(getattr(radix, name), getattr(wide, name)), name
    control = K.build_ngram_table(sentences[:-1] + ["w1 w2"], 4)
    assert not np.array_equal(control.count, radix.count) or control.sent.size != radix.sent.size


def test_matching_only_table_keeps_what_can_match() -> None:
    """With image_of_ref, the references keep exactly their n-grams made of tokens of their image's candidate."""
    refs = [["a dog runs on grass", "the dog"], ["a cat", "cat on a mat"]]
    cands = ["a dog on grass", "the cat"]
    sentences = [r for rs in refs for r in rs] + cands
    image_of_ref = np.array([0, 0, 1, 1])
    table = K.build_ngram_table(sentences, 4, image_of_ref=image_of_ref)
    expected = Counter()
    for s, text in enumerate(sentences):
        own = set(cands[image_of_ref[s]].split()) if s < 4 else set(text.split())
        words = text.split()
        for k in range(1, 5):
            for i in range(len(words) - k + 1):
                if set(words[i : i + k]) <= own:
                    expected[(s, tuple(words[i : i + k]))] += 1
    rows: dict[tuple[str, ...], set] = {}
    for (s, gram), c in expected.items():
        rows.setdefault(gram, set()).add((s, c))
    assert signatures(table) == sorted((len(g) - 1, sorted(r)) for g, r in rows.items())
    assert table.length.tolist() == [
        len(s.split()) for s in sentences
    ]  # true lengths, for the brevity penalty
    assert signatures(table) != signatures(
        K.build_ngram_table(sentences, 4)
    )  # control: something was left out
