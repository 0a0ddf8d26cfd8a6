"""Vectorised kernels behind the caption metrics: n-gram tables, BLEU, CIDEr-D and ROUGE-L on token lists.

These compute, with numpy over the whole corpus at once, exactly what coco-caption's (pycocoevalcap's)
``BleuScorer``, ``CiderScorer`` and ``Rouge`` compute one caption at a time in Python (Papineni et al. 2002,
BLEU; Vedantam et al. 2015, CIDEr; Lin 2004, ROUGE). They take already tokenised, already validated inputs;
the public functions with input checks and result objects are in ``vlblocks.metrics.caption``.

Every n-gram of every sentence gets a dense integer id, so counting becomes sorting and ``bincount``: a sentence's
n-gram counts are the run lengths of the sorted ``sentence * G + gram`` keys (G = number of distinct n-grams).
ROUGE-L's longest common subsequence uses the bit-parallel algorithm (Allison & Dix 1986, Hyyrö 2004) on all
(candidate, reference) pairs at once, one 64-bit word per pair.

Shape legend: I images, S sentences (references + candidates), T tokens, G distinct n-grams, R references,
n maximum n-gram order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NgramTable", "bleu_kernel", "build_ngram_table", "cider_kernel", "rouge_kernel"]

_TINY = 1e-15  # coco-caption's BLEU constants
_SMALL = 1e-9


@dataclass(frozen=True)
class NgramTable:
    """N-gram counts of S sentences (references first, image by image, then one candidate per image).

    ``sent``, ``gram``, ``count``: one row per (sentence, distinct n-gram) pair, sorted by sentence then gram;
    ``order[g]`` is the n-gram order (0-based: 0 = unigram) of gram g; ``length[s]`` the number of tokens.
    """

    sent: np.ndarray  # (P,) int64
    gram: np.ndarray  # (P,) int64
    count: np.ndarray  # (P,) int64
    order: np.ndarray  # (G,) int64
    length: np.ndarray  # (S,) int64
    num_grams: int


def build_ngram_table(sentences: list[list[str]], n: int) -> NgramTable:
    """Count the 1..n-grams of every sentence (a list of tokens) with dense ids shared by all sentences."""
    vocab: dict[str, int] = {}
    flat = [vocab.setdefault(tok, len(vocab)) for sent in sentences for tok in sent]
    tok = np.asarray(flat, dtype=np.int64)  # (T,)
    length = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))  # (S,)
    sent_of_tok = np.repeat(np.arange(len(sentences), dtype=np.int64), length)  # (T,)
    remaining = length[sent_of_tok] - (np.arange(tok.size) - np.repeat(np.cumsum(length) - length, length))
    codes = tok.copy()  # dense id of the k-gram starting at each position (k = 1 here)
    keys, orders, base = [], [], 0
    for k in range(1, n + 1):
        if k > 1:
            nxt = np.full(tok.size, -1, dtype=np.int64)
            m = max(tok.size - k + 1, 0)
            nxt[:m] = tok[k - 1 : k - 1 + m]
            _, codes = np.unique(codes * (tok.size + 1) + nxt, return_inverse=True)  # re-densify the k-grams
            codes = codes.reshape(-1).astype(np.int64)
        valid = remaining >= k  # the k-gram starting here stays inside its sentence
        used, dense = np.unique(codes[valid], return_inverse=True)
        keys.append((sent_of_tok[valid], dense.reshape(-1) + base))
        orders.append(np.full(used.size, k - 1, dtype=np.int64))
        base += used.size
    sent = np.concatenate([s for s, _ in keys]) if keys else np.zeros(0, np.int64)
    gram = np.concatenate([g for _, g in keys]) if keys else np.zeros(0, np.int64)
    uniq, count = np.unique(sent * max(base, 1) + gram, return_counts=True)
    return NgramTable(
        sent=uniq // max(base, 1),
        gram=uniq % max(base, 1),
        count=count.astype(np.int64),
        order=np.concatenate(orders) if orders else np.zeros(0, np.int64),
        length=length,
        num_grams=base,
    )


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[keys == query] for each query (0 where the key is absent); ``keys`` sorted and unique."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return np.where(keys[pos] == query, values[pos], 0)


def _split_rows(table: NgramTable, image_of_sent: np.ndarray, num_refs: int):
    """Row masks and (image * G + gram) keys for the reference rows and the candidate rows."""
    is_ref = table.sent < num_refs
    key = image_of_sent[table.sent] * max(table.num_grams, 1) + table.gram
    return is_ref, key


def bleu_kernel(table: NgramTable, image_of_ref: np.ndarray, num_images: int, n: int):
    """coco-caption BLEU-1..n ("closest" reference length): (corpus scores (n,), per-image scores (I, n)).

    Sentences are the R references (``image_of_ref`` (R,), grouped by image in order) then one candidate per
    image. Per image: clipped n-gram matches against the maximum count over its references, guesses
    ``max(0, len - k + 1)``, the reference length closest to the candidate's (ties to the shorter).
    """
    num_refs = image_of_ref.size
    image_of_sent = np.concatenate([image_of_ref, np.arange(num_images)])  # (S,)
    is_ref, key = _split_rows(table, image_of_sent, num_refs)
    order_ref = np.argsort(key[is_ref], kind="stable")
    ref_key, ref_count = key[is_ref][order_ref], table.count[is_ref][order_ref]
    starts = (
        np.flatnonzero(np.r_[True, ref_key[1:] != ref_key[:-1]]) if ref_key.size else np.zeros(0, np.int64)
    )
    max_key = ref_key[starts]
    max_count = np.maximum.reduceat(ref_count, starts) if starts.size else ref_count
    cand_rows = ~is_ref
    clipped = np.minimum(table.count[cand_rows], _lookup(max_key, max_count, key[cand_rows]))
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
    is_ref, key = _split_rows(table, image_of_sent, num_refs)
    ref_pairs = np.unique(key[is_ref])  # distinct (image, gram) among references
    df = np.bincount(ref_pairs % max(table.num_grams, 1), minlength=table.num_grams)
    weight = np.log(float(num_images)) - np.log(np.maximum(1.0, df))
    value = table.count * weight[table.gram]  # tf-idf of each (sentence, gram) row
    order = table.order[table.gram]
    norm = np.sqrt(np.bincount(table.sent * n + order, weights=value**2, minlength=len(table.length) * n))
    norm = norm.reshape(-1, n)  # (S, n)
    cand_rows = ~is_ref
    cand_key = key[cand_rows]  # sorted: candidate sentences are in image order, grams sorted within
    hyp = _lookup(cand_key, value[cand_rows], key[is_ref])
    ref_value = value[is_ref]
    dot = np.bincount(
        table.sent[is_ref] * n + order[is_ref],
        weights=np.minimum(hyp, ref_value) * ref_value,
        minlength=num_refs * n,
    ).reshape(num_refs, n)
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


def rouge_kernel(
    candidates: list[list[str]], references: list[list[list[str]]], beta: float = 1.2
) -> np.ndarray:
    """coco-caption ROUGE-L per image (I,): best LCS precision and best LCS recall over the references, F-beta.

    Tokens come from ``str.split(" ")`` as in coco-caption (so an empty caption is one empty token).
    """
    num_images = len(candidates)
    prec_max, rec_max = np.zeros(num_images), np.zeros(num_images)
    for img, (cand, refs) in enumerate(zip(candidates, references)):
        lcs = _lcs_many(cand, refs)
        prec_max[img] = max(x / float(len(cand)) for x in lcs)
        rec_max[img] = max(x / float(len(r)) for x, r in zip(lcs, refs))
    b2 = beta**2
    score = np.zeros(num_images)
    ok = (prec_max != 0) & (rec_max != 0)
    score[ok] = ((1 + b2) * prec_max[ok] * rec_max[ok]) / (rec_max[ok] + b2 * prec_max[ok])
    return score


def _lcs_many(cand: list[str], refs: list[list[str]]) -> list[int]:
    """Length of the longest common subsequence of ``cand`` with each reference (bit-parallel, Hyyrö 2004)."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(cand):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(cand)) - 1
    out = []
    for ref in refs:
        s = full
        for tok in ref:
            u = s & masks.get(tok, 0)
            s = ((s + u) | (s - u)) & full
        out.append(len(cand) - s.bit_count())
    return out
