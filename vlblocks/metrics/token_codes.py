"""Exact integer ids of the whitespace-split tokens of many ASCII strings, with numpy over their bytes.

The caption metrics score tokenised captions (``str.split()`` for BLEU / CIDEr-D, ``str.split(" ")`` for ROUGE-L,
as coco-caption does). Building the tokens as Python strings and a vocabulary dict costs more than the scoring, so
for ASCII text this module works on the bytes of the joined captions instead: token boundaries from a whitespace
table, each token's bytes packed into one uint64 (tokens of up to 8 bytes; ASCII bytes are non-zero, so the packing
is injective; longer tokens get ids from a dict, with the top bit set), and the 64-bit codes numbered by an
open-addressing hash table built with vectorised rounds of linear probing. The table stores the full codes, so equal
ids mean equal tokens: the ids are exact, whatever the hash. Anything else (non-ASCII text, a NUL character) returns
None and the caller splits in Python.

Shape legend: S sentences, T tokens, N bytes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ascii_token_ids"]

_SPLIT_WS = np.zeros(256, dtype=bool)  # what str.split() treats as whitespace among ASCII characters
_SPLIT_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_SPLIT_WS[0] = True  # the sentence separator
_SPACE_OR_NUL = np.zeros(256, dtype=bool)  # str.split(" "): the space only (and the separator)
_SPACE_OR_NUL[[0, 32]] = True
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)
_LONG = np.uint64(1 << 63)  # codes of tokens longer than 8 bytes (packed ASCII codes keep this bit 0)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MAX_ROUNDS = 64
_SMALL_TABLE_BITS = 16  # 65,536 slots (512 KiB): enough for the vocabulary of most caption sets


def ascii_token_ids(
    sentences: list[str], *, sep: str | None = None
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(ids (T,), tokens per sentence (S,), number of distinct tokens) of ``s.split(sep)`` for every sentence, ids
    dense in [0, V); or None when the text is not plain ASCII (or holds NUL) or ``sep`` is neither None nor " ".
    """
    if sep not in (None, " ") or not sentences:
        return None
    text = "\x00".join(sentences)
    if not text.isascii() or text.count("\x00") != len(sentences) - 1:
        return None
    size = len(text)
    raw = np.frombuffer(text.encode("ascii") + bytes(8), dtype=np.uint8)  # (N + 8,): 8 zero bytes of padding
    if sep is None:
        starts, ends = _runs(_SPLIT_WS[raw[:size]])
    else:
        cuts = np.flatnonzero(_SPACE_OR_NUL[raw[:size]])  # every space ends one token, possibly empty
        starts, ends = np.r_[0, cuts + 1], np.r_[cuts, size]
    sep_at = np.flatnonzero(raw[:size] == 0)  # (S - 1,)
    length = np.diff(np.searchsorted(starts, sep_at, side="right"), prepend=0, append=starts.size)  # (S,)
    words = np.ndarray(shape=(size + 1,), dtype="<u8", buffer=raw, strides=(1,))  # 8 bytes from every offset
    span = ends - starts
    codes = words[starts] & _LOW_BYTES[np.minimum(span, 8)]  # (T,) little-endian packed bytes
    long = np.flatnonzero(span > 8)
    if long.size:
        codes[long] = _long_codes(words, text, starts[long], span[long]) | _LONG
    for bits in (_SMALL_TABLE_BITS, int(codes.size).bit_length() + 1):  # a cache-sized table, then a sure one
        dense = _number_codes(codes, max(bits, 8))
        if dense is not None:
            return dense[0], length, dense[1]
    return None


def _runs(is_ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the runs of non-whitespace bytes.

    Padded with whitespace on both sides, the sequence changes kind at every run's start and end, alternately:
    one pass of ``!=`` and one ``flatnonzero`` give both.
    """
    padded = np.ones(is_ws.size + 2, dtype=bool)
    padded[1:-1] = is_ws
    change = np.flatnonzero(padded[1:] != padded[:-1])
    return change[0::2], change[1::2]


def _long_codes(words: np.ndarray, text: str, starts: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Exact codes (L,) of tokens longer than 8 bytes (below 2**63).

    A token of up to 16 bytes is a pair of packed words (first 8 bytes, the rest); numbering each word column
    with ``np.unique`` (two small 1-D sorts) gives the pair the code ``first_id * (number of second ids) +
    second_id``. Longer tokens (rare) are numbered by a dict, after every pair code.
    """
    codes = np.empty(starts.size, dtype=np.uint64)
    two = np.flatnonzero(span <= 16)
    head = words[starts[two]]
    tail = words[starts[two] + 8] & _LOW_BYTES[span[two] - 8]
    _, head_id = np.unique(head, return_inverse=True)
    tail_values, tail_id = np.unique(tail, return_inverse=True)
    codes[two] = head_id.astype(np.uint64) * np.uint64(tail_values.size) + tail_id.astype(np.uint64)
    rest = np.flatnonzero(span > 16)
    seen: dict[str, int] = {}
    first = two.size * max(tail_values.size, 1)  # above every pair code
    codes[rest] = [
        first + seen.setdefault(text[a : a + n], len(seen))
        for a, n in zip(starts[rest].tolist(), span[rest].tolist())
    ]
    return codes


def _number_codes(codes: np.ndarray, bits: int) -> tuple[np.ndarray, int] | None:
    """Dense ids of uint64 codes, equal ids for equal codes, via a hash table of 2**bits slots with vectorised
    linear probing.

    Each round, the unplaced codes look at their slot: where it is free one of them claims it (the last writer of
    a numpy scatter wins); a code finding its own value there is placed; the others move to the next slot. In the
    first round every slot is free, so it writes all codes at once; equal codes share a slot, so only the distinct
    codes that collide (a few per cent) go on to later rounds. None if the rounds do not converge (or the table is
    more than half full, which makes probing slow).
    """
    slots = 1 << bits
    table = np.zeros(slots, dtype=np.uint64)
    used = np.zeros(slots, dtype=bool)
    out = ((codes * _GOLDEN) >> np.uint64(64 - bits)).astype(
        np.int64
    )  # (T,) multiplicative hashing: the slots
    table[out] = codes
    used[out] = True
    todo = np.flatnonzero(table[out] != codes)  # the codes that lost their slot to another code
    codes, slot = codes[todo], (out[todo] + 1) & (slots - 1)
    for _ in range(_MAX_ROUNDS):
        if not todo.size or 2 * int(used.sum()) > slots:
            break
        free = ~used[slot]
        table[slot[free]] = codes[free]
        used[slot[free]] = True
        placed = table[slot] == codes
        out[todo[placed]] = slot[placed]
        todo, codes, slot = todo[~placed], codes[~placed], (slot[~placed] + 1) & (slots - 1)
    if todo.size or 2 * int(used.sum()) > slots:
        return None
    rank = np.cumsum(used) - 1  # (slots,) dense number of each used slot
    return rank[out], int(used.sum())
