"""Image-text retrieval metrics: Recall@K and median / mean rank in both directions, several captions per image.

The protocol of image-text retrieval on Flickr30k / COCO (Karpathy & Fei-Fei 2015, "Deep Visual-Semantic Alignments
for Generating Image Descriptions"; Faghri et al. 2018, "VSE++"; CLIP, Radford et al. 2021): every text queries the
images (text -> image: a hit when its own image is in the top K), every image queries the texts (image -> text: a hit
when any of its captions is in the top K). Each query's rank is found by counting, not sorting: the rank of the
correct item is 1 + the number of wrong items that score at least as high, computed over chunks of image rows so
5,000 images x 25,000 texts never holds more than a chunk of comparisons (no full ranking, no argsort).

Ties count against the query (pessimistic): a wrong item with exactly the correct item's score ranks ahead of it,
so a model that scores everything the same gets the worst rank, never a perfect one. Image -> text ranks the image's
best-scoring caption; an image without any caption has no image -> text query (it still serves as a distractor).

Shape legend: I images, T texts, Q queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vlblocks._checks import check_positive_int, check_tensor

__all__ = ["RetrievalResult", "RetrievalScores", "retrieval_recall"]

_CHUNK_ELEMENTS = 1 << 22  # comparisons per chunk (4M bools): memory stays small whatever I x T is


@dataclass(frozen=True)
class RetrievalScores:
    """Scores of one retrieval direction.

    Attributes:
        recall: Recall@K for every k, keyed ``"R@1"``, ``"R@5"``, ...: the fraction of queries whose correct item
            ranks k or better.
        median_rank: the median of the ranks (1 is best; the mean of the two middle ranks for an even count).
        mean_rank: the mean of the ranks.
        ranks: (Q,) long, every query's rank (1-based), in query order.
        num_queries: Q.
    """

    recall: dict[str, float]
    median_rank: float
    mean_rank: float
    ranks: torch.Tensor = field(repr=False)
    num_queries: int

    def __getitem__(self, key: str) -> float:
        """``scores["R@1"]`` is ``scores.recall["R@1"]``."""
        return self.recall[key]

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat dict for logging: ``{prefix + "R@1": ..., prefix + "median_rank": ..., prefix + "mean_rank": ...}``."""
        out = {prefix + key: value for key, value in self.recall.items()}
        out[prefix + "median_rank"] = self.median_rank
        out[prefix + "mean_rank"] = self.mean_rank
        return out


@dataclass(frozen=True)
class RetrievalResult:
    """Both directions: ``image_to_text`` (images query texts) and ``text_to_image`` (texts query images)."""

    image_to_text: RetrievalScores
    text_to_image: RetrievalScores

    def to_dict(self) -> dict[str, float]:
        """Flat dict for logging, keys ``"i2t_R@1"``, ..., ``"t2i_median_rank"``, ..."""
        return self.image_to_text.to_dict("i2t_") | self.text_to_image.to_dict("t2i_")


def retrieval_recall(
    similarity: torch.Tensor, text_to_image: torch.Tensor, *, ks: Sequence[int] = (1, 5, 10)
) -> RetrievalResult:
    """Recall@K and ranks of image -> text and text -> image retrieval from a similarity matrix.

    Args:
        similarity: (I, T) float, score of image i with text j (any monotone score: cosine, logits). NaN refused.
        text_to_image: (T,) int, the image each text describes (several texts may share one image).
        ks: the K of Recall@K, distinct positive ints.

    Returns:
        A `RetrievalResult`; its text -> image scores have T queries, its image -> text scores one query per
        image that has at least one caption (in image order).
    """
    similarity = check_tensor("similarity", similarity, ndim=2, dtype="float", shape="(I, T)")
    num_images, num_texts = similarity.shape
    text_to_image = check_tensor("text_to_image", text_to_image, ndim=1, dtype="int", shape=f"({num_texts},)")
    if text_to_image.shape[0] != num_texts:
        raise ValueError(
            f"text_to_image must have one image id per text (shape ({num_texts},)), got {tuple(text_to_image.shape)}"
        )
    ks = _check_ks(ks)
    similarity = similarity.detach()
    text_to_image = text_to_image.to(similarity.device, torch.long)
    low, high = int(text_to_image.min()), int(text_to_image.max())
    if low < 0 or high >= num_images:
        raise ValueError(f"text_to_image ids must be in [0, {num_images}), got values in [{low}, {high}]")

    texts = torch.arange(num_texts, device=similarity.device)
    correct = similarity[text_to_image, texts]  # (T,) score of each text with its own image
    if torch.isnan(correct).any():
        raise ValueError("similarity must not contain NaN")
    # best caption score per image, and how many of its captions reach it (they are not counted as wrong items)
    best = torch.full((num_images,), float("-inf"), dtype=similarity.dtype, device=similarity.device)
    best.scatter_reduce_(0, text_to_image, correct, reduce="amax")  # (I,)
    at_best = torch.zeros(num_images, dtype=torch.long, device=similarity.device)
    at_best.scatter_add_(0, text_to_image, (correct == best[text_to_image]).long())  # (I,)
    has_caption = torch.zeros(num_images, dtype=torch.bool, device=similarity.device)
    has_caption[text_to_image] = True

    t2i_at_least = torch.zeros(num_texts, dtype=torch.long, device=similarity.device)  # images >= correct score
    i2t_at_least = torch.empty(num_images, dtype=torch.long, device=similarity.device)  # texts >= best caption
    rows = max(1, _CHUNK_ELEMENTS // max(num_texts, 1))
    for start in range(0, num_images, rows):
        chunk = similarity[start : start + rows]  # (r, T)
        if torch.isnan(chunk).any():
            raise ValueError("similarity must not contain NaN")
        t2i_at_least += (chunk >= correct[None, :]).sum(dim=0)
        i2t_at_least[start : start + rows] = (chunk >= best[start : start + rows, None]).sum(dim=1)

    t2i_ranks = t2i_at_least  # its own image is among them: 1 + wrong images scoring >= the correct one
    i2t_ranks = (1 + i2t_at_least - at_best)[has_caption]  # 1 + wrong texts scoring >= the best caption
    return RetrievalResult(image_to_text=_scores(i2t_ranks, ks), text_to_image=_scores(t2i_ranks, ks))


def _scores(ranks: torch.Tensor, ks: tuple[int, ...]) -> RetrievalScores:
    ranks = ranks.cpu()
    recall = {f"R@{k}": float((ranks <= k).double().mean()) for k in ks}
    sorted_ranks = ranks.sort().values.double()
    n = sorted_ranks.numel()
    median = float((sorted_ranks[(n - 1) // 2] + sorted_ranks[n // 2]) / 2)
    return RetrievalScores(recall, median, float(sorted_ranks.mean()), ranks, n)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    out = tuple(check_positive_int("ks[i]", k) for k in ks)
    if len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct, got {ks!r}")
    return out
