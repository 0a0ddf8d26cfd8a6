"""Vectorised kernels behind the caption metrics: n-gram tables, BLEU, CIDEr-D and ROUGE-L on token lists.

These compute, with numpy over the whole corpus at once, exactly what coco-caption's (pycocoevalcap's)
``BleuScorer``, ``CiderScorer`` and ``Rouge`` compute one caption at a time in Python (Papineni et al. 2002,
BLEU; Vedantam et al. 2015, CIDEr; Lin 2004, ROUGE). They take already tokenised, already validated inputs;
the public functions with input checks and result objects are in ``vlblocks.metrics.caption``.

Every n-gram of every sentence gets an exact dense integer id, so counting becomes sorting and ``bincount``: the
positions of the k-grams are sorted by gram (ties by position) with one stable radix sort of 16-bit token ids per
order, built on the order k - 1 (a k-gram is a token followed by a (k-1)-gram); the distinct (gram, sentence) pairs
are then runs, and the rows come out sorted by gram then sentence, so every later per-image grouping (key
``gram * I + image``) is already sorted. The candidate side then finds its reference rows by binary search.
Membership of an (image, token) pair in an image's candidate is a bitmap read (``_member``): BLEU drops the
reference tokens that cannot match before building its table. ROUGE-L's longest common subsequence uses the
bit-parallel algorithm (Allison & Dix 1986, Hyyrö 2004) on all (candidate, reference) pairs at once, one 64-bit
word per pair, over the reference tokens that occur in the candidate only (the others cannot change it).

Shape legend: I images, S sentences (references + candidates), T tokens, G distinct n-grams, R references,
n maximum n-gram order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vlblocks.metrics.token_codes import ascii_token_ids

__all__ = ["NgramTable", "bleu_kernel", "build_ngram_table", "cider_kernel", "rouge_kernel"]

_TINY = 1e-15  # coco-caption's BLEU constants
_SMALL = 1e-9


@dataclass(frozen=True)
class NgramTable:
    """N-gram counts of S sentences (references first, image by image, then one candidate per image).

    ``sent``, ``gram``, ``count``: one row per (sentence, distinct n-gram) pair, sorted by gram then sentence
    (grams numbered order by order, so also by order);
    ``order[g]`` is the n-gram order (0-based: 0 = unigram) of gram g; ``length[s]`` the number of tokens.
    """

    sent: np.ndarray  # (P,) int64
    gram: np.ndarray  # (P,) int64
    count: np.ndarray  # (P,) int64
    order: np.ndarray  # (G,) int64
    length: np.ndarray  # (S,) int64
    num_grams: int


_SENTINEL = "\x00\x01sentence-break\x01\x00"
_RADIX_VOCAB = 2**16  # token ids below this sort as uint16 (numpy's radix sort); larger ones as int64
_BITMAP_BITS = 2**28  # (image, token) bitmaps up to 32 MB; larger corpora sort instead


def token_ids(sentences: list[str], *, sep: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(token ids (T,), tokens per sentence (S,), vocabulary size) of ``s.split(sep)`` for every sentence.

    Plain ASCII text is split on its bytes with numpy (``token_codes.ascii_token_ids``); other text in one
    ``str.split`` call on the concatenation of the sentences with a sentinel token between them.
    """
    fast = ascii_token_ids(sentences, sep=sep)
    if fast is not None:
        return fast
    joiner = f" {_SENTINEL} "
    flat = joiner.join(sentences).split(sep)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    if not sentences:
        return ids[:0], np.zeros(0, np.int64), 0
    sentinel = vocab.get(_SENTINEL, -1)
    breaks = np.flatnonzero(ids == sentinel)
    if breaks.size != len(sentences) - 1:  # a sentence holds the sentinel itself: split one by one
        vocab = {}
        ids = np.asarray(
            [vocab.setdefault(t, len(vocab)) for x in sentences for t in x.split(sep)], dtype=np.int64
        )
        length = np.asarray([len(x.split(sep)) for x in sentences], dtype=np.int64)
        return ids, length, len(vocab)
    bounds = np.r_[-1, breaks, ids.size]
    length = np.diff(bounds) - 1  # (S,)
    keep = np.ones(ids.size, dtype=bool)
    keep[breaks] = False
    return ids[keep], length, len(vocab)


def build_ngram_table(sentences: list[str], n: int, *, image_of_ref: np.ndarray | None = None) -> NgramTable:
    """Count the 1..n-grams of every sentence (whitespace-split) with dense ids shared by all sentences.

    With ``image_of_ref`` (R,) (the sentences being R references, then one candidate per image), the reference
    n-grams holding a token absent from their image's candidate are left out: they can match nothing, and BLEU
    only needs the candidates' n-grams and their counts in the references.

    The k-gram at token t is (token t, (k-1)-gram at t + 1). The positions of the (k-1)-grams sorted by gram (ties
    by position) come from the previous order; shifted one token left they are sorted by the k-grams' second part,
    and one *stable* sort by the first token (a radix sort of 16-bit ids) then sorts them by k-gram, ties still by
    position, hence by sentence. The distinct (gram, sentence) pairs are then runs, their counts run lengths and
    the dense gram ids a cumulative sum: exact integer ids, no hashing, and no comparison sort.
    """
    tok, length, vocab_size = token_ids(sentences)  # (T,), (S,)
    num_tok = tok.size
    sent_of_tok = np.repeat(np.arange(len(sentences), dtype=np.int64), length)  # (T,)
    first_of_sent = np.zeros(num_tok, dtype=bool)  # (T,) the first token of its sentence
    first_of_sent[(np.cumsum(length) - length)[length > 0]] = True
    key_tok = tok.astype(np.uint16) if vocab_size <= _RADIX_VOCAB else tok  # radix sort for 16-bit ids
    if image_of_ref is None:
        pos = np.argsort(key_tok, kind="stable")  # (T,) the unigrams sorted by token, ties by position
    else:
        image_of_sent = np.concatenate([image_of_ref, np.arange(len(sentences) - image_of_ref.size)])  # (S,)
        kept = _in_own_candidate(tok, sent_of_tok, image_of_sent, image_of_ref.size, max(vocab_size, 1))
        first_of_sent[1:] |= ~kept[:-1]  # a kept token after a dropped one starts an n-gram chain
        pos = np.flatnonzero(kept)
        pos = pos[np.argsort(key_tok[pos], kind="stable")]
    tail = pos[:0]  # the dense id of the (k-1)-gram after each position of pos (k > 1)
    gram_of_pos = np.empty(
        num_tok, dtype=np.int64
    )  # dense id of the gram (of the current order) at a position
    sents, grams, counts, orders, offset = [], [], [], [], 0
    for k in range(1, n + 1):
        head = tok[pos]
        new_gram = np.empty(pos.size, dtype=bool)
        new_gram[:1] = True
        np.not_equal(head[1:], head[:-1], out=new_gram[1:])
        if k > 1:
            new_gram[1:] |= tail[1:] != tail[:-1]
        gram = np.cumsum(new_gram) - 1  # (P,) dense ids of this order
        gram_of_pos[pos] = gram
        sent = sent_of_tok[pos]
        row_start = new_gram.copy()
        row_start[1:] |= sent[1:] != sent[:-1]
        starts = np.flatnonzero(row_start)
        num_grams = int(gram[-1]) + 1 if gram.size else 0
        sents.append(sent[starts])
        grams.append(gram[starts] + offset)
        count = np.empty(starts.size, dtype=np.int64)
        count[:-1] = starts[1:] - starts[:-1]
        count[-1:] = pos.size - starts[-1:]
        counts.append(count)
        orders.append(np.full(num_grams, k - 1, dtype=np.int64))
        offset += num_grams
        if k < n:  # the (k+1)-grams: a token then a k-gram; start one token left of a k-gram, in the sentence
            pos = pos[~first_of_sent[pos]] - 1  # still sorted by the (k+1)-grams' tail, ties by position
            tail = gram_of_pos[pos + 1]
            by = np.argsort(key_tok[pos], kind="stable")  # (P,): by first token, the tail order kept
            pos, tail = pos[by], tail[by]
    order = np.concatenate(orders)
    return NgramTable(
        np.concatenate(sents), np.concatenate(grams), np.concatenate(counts), order, length, order.size
    )


def _in_own_candidate(tok, sent_of_tok, image_of_sent, num_refs: int, vocab_size: int) -> np.ndarray:
    """(T,) bool: the token occurs in the candidate of its sentence's image (candidates: True)."""
    key = image_of_sent[sent_of_tok] * vocab_size + tok  # (T,) exact: tok < vocab_size
    is_ref = sent_of_tok < num_refs
    kept = np.ones(tok.size, dtype=bool)
    num_keys = (int(image_of_sent.max(initial=0)) + 1) * vocab_size
    kept[is_ref] = _member(key[~is_ref], key[is_ref], num_keys)
    return kept


def _member(keys: np.ndarray, query: np.ndarray, num_keys: int) -> np.ndarray:
    """(Q,) bool: each query is one of ``keys`` (integers in [0, num_keys)).

    The keys are set in a bitmap of ``num_keys`` bits (5,000 images x 8,000 tokens: 5 MB), which each query then
    reads: two passes, no sort. Above ``_BITMAP_BITS`` the keys are sorted and the queries found by binary search.
    """
    if num_keys > _BITMAP_BITS:
        distinct = np.unique(keys)
        return _lookup(distinct, np.ones(distinct.size, dtype=bool), query)
    bitmap = np.zeros(num_keys // 8 + 1, dtype=np.uint8)
    np.bitwise_or.at(bitmap, keys >> 3, np.left_shift(1, keys & 7).astype(np.uint8))
    return ((bitmap[query >> 3] >> (query & 7).astype(np.uint8)) & 1).astype(bool)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[keys == query] for each query (0 where the key is absent); ``keys`` sorted and unique."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return np.where(keys[pos] == query, values[pos], 0)


def _matching_ref_rows(key: np.ndarray, is_ref: np.ndarray, cand_rows: np.ndarray):
    """(table rows of the references that share a candidate row's (gram, image) key (M,), ascending; their number
    per candidate row). The reference keys are sorted, so each candidate row meets one contiguous range."""
    ref_key, cand_key = key[is_ref], key[cand_rows]
    lo, hi = np.searchsorted(ref_key, cand_key, "left"), np.searchsorted(ref_key, cand_key, "right")
    hits = hi - lo
    rows = np.repeat(lo - np.cumsum(hits) + hits, hits) + np.arange(int(hits.sum()))  # (M,) into ref_key
    return np.flatnonzero(is_ref)[rows], hits


def _split_rows(table: NgramTable, image_of_sent: np.ndarray, num_refs: int, num_images: int):
    """Row mask of the references and (gram * I + image) keys, sorted within the reference and candidate rows."""
    is_ref = table.sent < num_refs
    key = table.gram * max(num_images, 1) + image_of_sent[table.sent]
    return is_ref, key


def bleu_kernel(table: NgramTable, image_of_ref: np.ndarray, num_images: int, n: int):
    """coco-caption BLEU-1..n ("closest" reference length): (corpus scores (n,), per-image scores (I, n)).

    Sentences are the R references (``image_of_ref`` (R,), grouped by image in order) then one candidate per
    image. Per image: clipped n-gram matches against the maximum count over its references, guesses
    ``max(0, len - k + 1)``, the reference length closest to the candidate's (ties to the shorter).
    """
    num_refs = image_of_ref.size
    image_of_sent = np.concatenate([image_of_ref, np.arange(num_images)])  # (S,)
    is_ref, key = _split_rows(table, image_of_sent, num_refs, num_images)
    cand_rows = ~is_ref
    # per distinct (gram, image) of the references the maximum count (a run reduction: the keys are sorted), then
    # per candidate row that maximum (0 where no reference of its image has the gram), by one binary search
    ref_keys, ref_max = _ref_max(key[is_ref], table.count[is_ref])
    max_count = _lookup(ref_keys, ref_max, key[cand_rows])
    clipped = np.minimum(table.count[cand_rows], max_count)
    cand_image = table.sent[cand_rows] - num_refs
    order = table.order[table.gram[cand_rows]]
    correct = np.bincount(cand_image * n + order, weights=clipped, minlength=num_images * n).reshape(
        num_images, n
    )
    testlen = table.length[num_refs:]  # (I,)
    guess = np.maximum(0, testlen[:, None] - np.arange(n)[None, :])  # (I, n)
    reflen = _closest_length(table.length[:num_refs], image_of_ref, testlen)
    # per image, as coco-caption: cumulative product of the precisions, k-th root, brevity penalty
    prec = (correct + _TINY) / (guess + _SMALL)
    per_image = np.cumprod(prec, axis=1) ** (1.0 / np.arange(1, n + 1))[None, :]
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    short = ratio < 1
    per_image[short] *= np.exp(1 - 1 / ratio[short])[:, None]
    # corpus, in Python floats in the same order as coco-caption
    tot_correct, tot_guess = correct.sum(0).astype(np.int64).tolist(), guess.sum(0).tolist()
    scores, acc = [], 1.0
    for k in range(n):
        acc *= float(tot_correct[k] + _TINY) / (tot_guess[k] + _SMALL)
        scores.append(acc ** (1.0 / (k + 1)))
    ratio_c = (int(testlen.sum()) + _TINY) / (int(reflen.sum()) + _SMALL)
    if ratio_c < 1:
        scores = [s * math.exp(1 - 1 / ratio_c) for s in scores]
    return scores, per_image


def _ref_max(ref_key: np.ndarray, ref_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (gram * I + image) keys of the reference rows (given sorted) and the maximum count over them."""
    if ref_key.size == 0:
        return ref_key, ref_count
    starts = np.flatnonzero(np.r_[True, ref_key[1:] != ref_key[:-1]])
    return ref_key[starts], np.maximum.reduceat(ref_count, starts)


def _closest_length(ref_len: np.ndarray, image_of_ref: np.ndarray, testlen: np.ndarray) -> np.ndarray:
    """Per image, the reference length closest to the candidate length, ties broken towards the shorter."""
    big = int(ref_len.max(initial=0)) + 1
    code = np.abs(ref_len - testlen[image_of_ref]) * big + ref_len  # min (|l - c|, l) lexicographically
    starts = np.flatnonzero(np.r_[True, image_of_ref[1:] != image_of_ref[:-1]])
    return np.minimum.reduceat(code, starts) % big


def cider_kernel(table: NgramTable, image_of_ref: np.ndarray, num_images: int, n: int, sigma: float):
    """coco-caption "CIDEr" (= CIDEr-D) per image (I,): same sentence layout as ``bleu_kernel``.

    Document frequency over the images' reference sets, idf ``log(I) - log(max(1, df))``, tf-idf vectors
    per n-gram order, clipped cosine ``sum min(h, r) * r / (|h| |r|)``, Gaussian length penalty on the
    difference of the *bigram* counts (coco-caption's ``length``), mean over orders, mean over references, x10.
    """
    num_refs = image_of_ref.size
    image_of_sent = np.concatenate([image_of_ref, np.arange(num_images)])  # (S,)
    is_ref, key = _split_rows(table, image_of_sent, num_refs, num_images)
    ref_pairs, _ = _ref_max(key[is_ref], table.count[is_ref])  # distinct (image, gram) among references
    df = np.bincount(ref_pairs // max(num_images, 1), minlength=table.num_grams)
    weight = np.log(float(num_images)) - np.log(np.maximum(1.0, df))
    value = table.count * weight[table.gram]  # tf-idf of each (sentence, gram) row
    order = table.order[table.gram]
    norm = np.sqrt(np.bincount(table.sent * n + order, weights=value**2, minlength=len(table.length) * n))
    norm = norm.reshape(-1, n)  # (S, n)
    cand_rows = ~is_ref
    ref_rows, hits = _matching_ref_rows(key, is_ref, cand_rows)
    hyp = np.repeat(value[cand_rows], hits)  # (M,)
    ref_value = value[ref_rows]
    dot = (
        np.bincount(
            table.sent[ref_rows] * n + order[ref_rows],
            weights=np.minimum(hyp, ref_value) * ref_value,
            minlength=num_refs * n,
        )
        .reshape(num_refs, n)
        .astype(np.float64, copy=False)
    )  # (R, n); float even when nothing matched
    norm_h, norm_r = norm[num_refs:][image_of_ref], norm[:num_refs]
    both = (norm_h != 0) & (norm_r != 0)
    dot[both] /= norm_h[both] * norm_r[both]
    bigrams = np.maximum(table.length - 1, 0)  # coco-caption's "length": the bigram count
    delta = (bigrams[num_refs:][image_of_ref] - bigrams[:num_refs]).astype(np.float64)
    dot *= np.power(np.e, -(delta**2) / (2 * sigma**2))[:, None]
    starts = np.flatnonzero(np.r_[True, image_of_ref[1:] != image_of_ref[:-1]])
    summed = np.add.reduceat(dot, starts, axis=0)  # (I, n): sum over each image's references
    refs_per_image = np.diff(np.r_[starts, num_refs])
    return summed.mean(axis=1) / refs_per_image * 10.0


def rouge_kernel(candidates: list[str], references: list[list[str]], beta: float = 1.2) -> np.ndarray:
    """coco-caption ROUGE-L per image (I,): best LCS precision and best LCS recall over the references, F-beta.

    Tokens come from ``str.split(" ")`` as in coco-caption (so an empty caption is one empty token). The LCS of
    every (candidate, reference) pair runs at once with one uint64 bit-vector per pair (candidates up to 64 tokens;
    longer ones take the same algorithm on Python ints).
    """
    num_images = len(candidates)
    refs_flat = [r for rs in references for r in rs]
    ids, length, _ = token_ids(candidates + refs_flat, sep=" ")
    cand_len, ref_len = length[:num_images], length[num_images:]  # (I,), (R,)
    image_of_ref = np.repeat(np.arange(num_images), [len(rs) for rs in references])  # (R,)
    lcs = np.zeros(ref_len.size, dtype=np.int64)
    short = cand_len[image_of_ref] <= 64
    cand_tok = ids[: int(cand_len.sum())]
    lcs[short] = _lcs_bits(cand_tok, cand_len, ids[cand_tok.size :], ref_len, image_of_ref, short)
    starts = np.r_[0, np.cumsum(length)]
    for r in np.flatnonzero(~short):
        img = image_of_ref[r]
        a = ids[starts[img] : starts[img + 1]].tolist()
        b = ids[starts[num_images + r] : starts[num_images + r + 1]].tolist()
        lcs[r] = _lcs_int(a, b)
    first = np.r_[0, np.cumsum([len(rs) for rs in references])[:-1]]
    prec_max = np.maximum.reduceat(lcs / cand_len[image_of_ref].astype(np.float64), first)
    rec_max = np.maximum.reduceat(lcs / ref_len.astype(np.float64), first)
    b2 = beta**2
    score = np.zeros(num_images)
    ok = (prec_max != 0) & (rec_max != 0)
    score[ok] = ((1 + b2) * prec_max[ok] * rec_max[ok]) / (rec_max[ok] + b2 * prec_max[ok])
    return score


def _lcs_bits(cand_tok, cand_len, ref_tok, ref_len, image_of_ref, rows) -> np.ndarray:
    """LCS lengths of the references ``rows`` with their image's candidate (<= 64 tokens), bit-parallel (Hyyro 2004).

    For each reference token, M = the bits of the candidate positions holding that token; then, token by token,
    ``U = S & M; S = (S + U) | (S - U)`` on a bit-vector S that starts all ones; the LCS is the number of zero bits.
    """
    cand_start = np.r_[0, np.cumsum(cand_len)[:-1]]
    pos = np.arange(cand_tok.size) - np.repeat(
        cand_start, cand_len
    )  # position of each token in its candidate
    img_of_tok = np.repeat(np.arange(cand_len.size), cand_len)
    ok = cand_len[img_of_tok] <= 64
    vocab = int(max(cand_tok.max(initial=0), ref_tok.max(initial=0))) + 1
    key = img_of_tok[ok] * vocab + cand_tok[ok]
    bits = np.left_shift(np.uint64(1), pos[ok].astype(np.uint64))
    order = np.argsort(key, kind="stable")
    key, bits = key[order], bits[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, np.int64)
    mask_key = key[starts]
    mask = np.bitwise_or.reduceat(bits, starts) if starts.size else bits
    # the mask of every reference token; a token absent from the candidate (mask 0) leaves S unchanged, so it is
    # dropped, and the loop below runs over the longest *matching* part of a reference (12 tokens instead of 32 on
    # the COCO-style benchmark)
    r_len = ref_len[rows]
    r_start = np.r_[0, np.cumsum(ref_len)[:-1]][rows]
    row_of = np.repeat(np.arange(r_len.size), r_len)  # (N,) row of each reference token
    first = np.cumsum(r_len) - r_len
    tok_idx = np.arange(row_of.size) - np.repeat(first, r_len) + np.repeat(r_start, r_len)
    query = image_of_ref[rows][row_of] * vocab + ref_tok[tok_idx]  # (N,) (image, token) keys
    hit = np.flatnonzero(_member(mask_key, query, cand_len.size * vocab))  # binary search for these only
    token_mask = _lookup(mask_key, mask, query[hit]).astype(np.uint64)  # (H,)
    kept = np.bincount(row_of[hit], minlength=r_len.size)  # matching tokens per reference
    col = np.arange(hit.size) - np.repeat(np.cumsum(kept) - kept, kept)
    m = np.zeros((int(kept.max(initial=0)), r_len.size), dtype=np.uint64)  # (L, R) masks, left-aligned
    m[col, row_of[hit]] = token_mask
    width = m.shape[0]
    n = cand_len[image_of_ref[rows]].astype(np.uint64)
    full = np.where(n == 64, np.uint64(2**64 - 1), (np.uint64(1) << np.minimum(n, 63)) - np.uint64(1))
    s = full.copy()
    with np.errstate(over="ignore"):
        for j in range(width):
            u = s & m[j]
            s = ((s + u) | (s - u)) & full
    return n.astype(np.int64) - np.bitwise_count(s).astype(np.int64)


def _lcs_int(cand: list[int], ref: list[int]) -> int:
    """LCS length of two token lists with the same bit-parallel algorithm on Python ints (any length)."""
    masks: dict[int, int] = {}
    for i, tok in enumerate(cand):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(cand)) - 1
    s = full
    for tok in ref:
        u = s & masks.get(tok, 0)
        s = ((s + u) | (s - u)) & full
    return len(cand) - s.bit_count()
