"""Caption metrics exactly as coco-caption (pycocoevalcap) computes them, without Java and much faster.

BLEU-1..4 (Papineni et al. 2002), CIDEr-D (Vedantam et al. 2015; coco-caption calls it "CIDEr") and ROUGE-L
(Lin 2004), on captions tokenised like coco-caption's ``PTBTokenizer`` (Stanford PTB tokenisation, lower-cased,
punctuation tokens dropped; ``vlblocks.metrics.ptb``). Each function takes ``references`` ({image_id: [captions]})
and ``candidates`` ({image_id: caption} or a COCO results list ``[{"image_id": ..., "caption": ...}]``) and returns
a result object with the corpus score(s) and the per-image scores, in the order of ``references``.

With ``tokenize=False`` the captions are taken as already tokenised text and scored as coco-caption's scorers
score the output of its tokenizer (``Bleu``, ``Cider``, ``Rouge``: BLEU / CIDEr split on any whitespace, ROUGE-L on
single spaces). The numbers equal pycocoevalcap's to ~1e-15 (float summation order); the counting is vectorised
with numpy (``vlblocks.metrics.caption_kernels``).

Shape legend: I images, n maximum n-gram order.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from vlblocks._checks import check_positive_int, check_positive_number
from vlblocks.metrics.caption_kernels import bleu_kernel, build_ngram_table, cider_kernel, rouge_kernel
from vlblocks.metrics.ptb import ptb_tokenize_batch

__all__ = [
    "BleuResult",
    "CaptionScores",
    "ScoreResult",
    "bleu",
    "caption_scores",
    "cider_d",
    "rouge_l",
]

References = Mapping[Hashable, Sequence[str]]
Candidates = Mapping[Hashable, str] | Sequence[Mapping[str, object]]


@dataclass(frozen=True)
class ScoreResult:
    """One corpus score and the per-image scores: ``per_image[i]`` is the score of ``image_ids[i]`` (I,)."""

    score: float
    image_ids: tuple[Hashable, ...]
    per_image: np.ndarray  # (I,)

    def as_dict(self) -> dict[Hashable, float]:
        """{image_id: score} as Python floats."""
        return dict(zip(self.image_ids, self.per_image.tolist()))


@dataclass(frozen=True)
class BleuResult:
    """BLEU-1..n: ``scores[k]`` is corpus BLEU-(k+1); ``per_image[i, k]`` the image-level value (I, n)."""

    scores: tuple[float, ...]
    image_ids: tuple[Hashable, ...]
    per_image: np.ndarray  # (I, n)

    def as_dict(self) -> dict[Hashable, list[float]]:
        """{image_id: [BLEU-1, ..., BLEU-n]} as Python floats."""
        return dict(zip(self.image_ids, self.per_image.tolist()))


@dataclass(frozen=True)
class CaptionScores:
    """BLEU-1..4, CIDEr-D and ROUGE-L of one evaluation (what ``COCOEvalCap`` prints, without METEOR / SPICE)."""

    bleu: BleuResult
    cider_d: ScoreResult
    rouge_l: ScoreResult

    def summary(self) -> dict[str, float]:
        """{"Bleu_1": ..., "Bleu_4": ..., "ROUGE_L": ..., "CIDEr": ...}, coco-caption's names."""
        out = {f"Bleu_{k + 1}": float(s) for k, s in enumerate(self.bleu.scores)}
        out["ROUGE_L"] = self.rouge_l.score
        out["CIDEr"] = self.cider_d.score
        return out

    def per_image(self) -> dict[Hashable, dict[str, float]]:
        """{image_id: {"Bleu_1": ..., "ROUGE_L": ..., "CIDEr": ...}} (coco-caption's ``imgToEval``)."""
        rouge, cider = self.rouge_l.as_dict(), self.cider_d.as_dict()
        out = {}
        for img, row in self.bleu.as_dict().items():
            entry = {f"Bleu_{k + 1}": v for k, v in enumerate(row)}
            entry["ROUGE_L"], entry["CIDEr"] = rouge[img], cider[img]
            out[img] = entry
        return out


def _as_candidate_dict(candidates: Candidates) -> dict[Hashable, object]:
    if isinstance(candidates, Mapping):
        return dict(candidates)
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
        raise TypeError(
            "candidates must be a dict {image_id: caption} or a COCO results list, got "
            f"{type(candidates).__name__}"
        )
    out: dict[Hashable, object] = {}
    for i, item in enumerate(candidates):
        if not isinstance(item, Mapping) or "image_id" not in item or "caption" not in item:
            raise ValueError(f"candidates[{i}] must be a dict with 'image_id' and 'caption', got {item!r}")
        img = item["image_id"]
        if img in out:
            raise ValueError(f"candidates holds more than one caption for image id {img!r}")
        out[img] = item["caption"]
    return out


def _prepare(references: References, candidates: Candidates):
    """Validated (image_ids, [[ref captions]], [candidate caption]) in the order of ``references``."""
    if not isinstance(references, Mapping):
        raise TypeError(
            f"references must be a dict {{image_id: [captions]}}, got {type(references).__name__}"
        )
    cands = _as_candidate_dict(candidates)
    if not references:
        raise ValueError("references is empty: nothing to score")
    fast = _fast_prepare(references, cands)
    if fast is not None:
        return fast
    for img in references:
        if img not in cands:
            raise ValueError(f"image id {img!r} has references but no candidate caption")
    for img in cands:
        if img not in references:
            raise ValueError(f"image id {img!r} has a candidate caption but no references")
    ids = tuple(references)
    refs, cand = [], []
    for img in ids:
        captions = references[img]
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise ValueError(f"references of image id {img!r} must be a list of strings, got {captions!r}")
        if len(captions) == 0:
            raise ValueError(f"image id {img!r} has an empty list of references")
        for c in captions:
            if not isinstance(c, str):
                raise ValueError(f"image id {img!r} has a non-string reference caption: {c!r}")
        if not isinstance(cands[img], str):
            raise ValueError(f"image id {img!r} has a non-string candidate caption: {cands[img]!r}")
        refs.append(list(captions))
        cand.append(cands[img])
    return ids, refs, cand


def _fast_prepare(references: References, cands: dict[Hashable, object]):
    """``_prepare``'s result when every check passes, found with C-level scans; None sends to the checks one by one."""
    if cands.keys() != references.keys():
        return None
    refs = list(references.values())
    if not set(map(type, refs)) <= {list, tuple} or min(map(len, refs)) == 0:
        return None
    ids = tuple(references)
    cand = list(map(cands.__getitem__, ids))
    if set(map(type, chain.from_iterable(refs))) | set(map(type, cand)) != {str}:
        return None
    return ids, refs, cand  # the reference lists themselves: they are only read


def _tokenized(references: References, candidates: Candidates, tokenize: bool):
    ids, refs, cand = _prepare(references, candidates)
    if tokenize:
        refs = ptb_tokenize_batch(refs)
        cand = [c[0] for c in ptb_tokenize_batch([[c] for c in cand])]
    return ids, refs, cand


def _ngram_inputs(refs: list[list[str]], cand: list[str], n: int, *, matching_only: bool = False):
    sentences = [r for rs in refs for r in rs] + cand
    image_of_ref = np.repeat(np.arange(len(refs), dtype=np.int64), [len(rs) for rs in refs])
    table = build_ngram_table(sentences, n, image_of_ref=image_of_ref if matching_only else None)
    return table, image_of_ref


def _bleu(ids, refs, cand, n: int) -> BleuResult:
    table, image_of_ref = _ngram_inputs(refs, cand, n, matching_only=True)
    scores, per_image = bleu_kernel(table, image_of_ref, len(ids), n)
    return BleuResult(tuple(float(s) for s in scores), ids, per_image)


def _cider(ids, refs, cand, sigma: float) -> ScoreResult:
    table, image_of_ref = _ngram_inputs(refs, cand, 4)
    per_image = cider_kernel(table, image_of_ref, len(ids), 4, sigma)
    return ScoreResult(float(np.mean(per_image)), ids, per_image)


def _rouge(ids, refs, cand) -> ScoreResult:
    per_image = rouge_kernel(cand, refs)
    return ScoreResult(float(np.mean(per_image)), ids, per_image)


def bleu(references: References, candidates: Candidates, *, n: int = 4, tokenize: bool = True) -> BleuResult:
    """Corpus BLEU-1..n and per-image BLEU as coco-caption computes them.

    Args:
        references: {image_id: [reference captions]} (at least one per image).
        candidates: {image_id: caption} or ``[{"image_id": ..., "caption": ...}]``, one per image of references.
        n: maximum n-gram order.
        tokenize: PTB-tokenise (coco-caption's tokenizer) first; False takes the captions as tokenised text.

    Returns:
        ``BleuResult(scores (n,), image_ids, per_image (I, n))``.
    """
    n = check_positive_int("n", n)
    return _bleu(*_tokenized(references, candidates, tokenize), n)


def cider_d(
    references: References, candidates: Candidates, *, sigma: float = 6.0, tokenize: bool = True
) -> ScoreResult:
    """coco-caption's "CIDEr" (which is CIDEr-D: clipping, Gaussian length penalty with ``sigma``, x10).

    The document frequencies come from the references of the images evaluated, so the score of a caption depends
    on the whole set scored with it. Arguments as ``bleu``. Returns ``ScoreResult(score, image_ids, per_image)``.
    """
    sigma = check_positive_number("sigma", sigma)
    return _cider(*_tokenized(references, candidates, tokenize), sigma)


def rouge_l(references: References, candidates: Candidates, *, tokenize: bool = True) -> ScoreResult:
    """coco-caption's ROUGE-L: F-measure (beta 1.2) of the best LCS precision and the best LCS recall.

    Arguments as ``bleu``. Returns ``ScoreResult(score, image_ids, per_image)``.
    """
    return _rouge(*_tokenized(references, candidates, tokenize))


def caption_scores(references: References, candidates: Candidates, *, tokenize: bool = True) -> CaptionScores:
    """BLEU-1..4, CIDEr-D and ROUGE-L at once, tokenising once (what ``COCOEvalCap.evaluate`` computes)."""
    ids, refs, cand = _tokenized(references, candidates, tokenize)
    table, image_of_ref = _ngram_inputs(refs, cand, 4)
    scores, per_image = bleu_kernel(table, image_of_ref, len(ids), 4)
    cider = cider_kernel(table, image_of_ref, len(ids), 4, 6.0)
    return CaptionScores(
        bleu=BleuResult(tuple(float(s) for s in scores), ids, per_image),
        cider_d=ScoreResult(float(np.mean(cider)), ids, cider),
        rouge_l=_rouge(ids, refs, cand),
    )
