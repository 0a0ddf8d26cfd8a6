"""Tests of retrieval_recall: a brute-force reference (sorted lists, pessimistic ties), several captions per image,
ties, chunking, golden values, and the documented errors."""

from __future__ import annotations

import pytest
import torch

import vlblocks.metrics.retrieval as retrieval
from vlblocks.metrics import retrieval_recall

KS = (1, 2, 5)


def _brute_force_ranks(sim: torch.Tensor, text_to_image: list[int]) -> tuple[list[int], list[int]]:
    """Sort every query's candidates by score, wrong items first among equal scores; rank of the first hit."""
    num_images, num_texts = sim.shape
    t2i = []
    for j in range(num_texts):
        order = sorted(range(num_images), key=lambda i: (-float(sim[i, j]), i == text_to_image[j]))
        t2i.append(order.index(text_to_image[j]) + 1)
    i2t = []
    for i in range(num_images):
        captions = {j for j in range(num_texts) if text_to_image[j] == i}
        if not captions:
            continue
        order = sorted(range(num_texts), key=lambda j: (-float(sim[i, j]), j in captions))
        i2t.append(next(pos for pos, j in enumerate(order) if j in captions) + 1)
    return i2t, t2i


def _check_against_brute_force(sim: torch.Tensor, text_to_image: list[int]) -> None:
    result = retrieval_recall(sim, torch.tensor(text_to_image), ks=KS)
    i2t, t2i = _brute_force_ranks(sim, text_to_image)
    for scores, ranks in ((result.image_to_text, i2t), (result.text_to_image, t2i)):
        assert scores.ranks.tolist() == ranks
        ranks_t = torch.tensor(ranks, dtype=torch.float64)
        assert scores.num_queries == len(ranks)
        for k in KS:
            assert scores.recall[f"R@{k}"] == pytest.approx(float((ranks_t <= k).double().mean()))
        assert scores.median_rank == pytest.approx(_median(ranks))
        assert scores.mean_rank == pytest.approx(float(ranks_t.mean()))


def _median(values: list[int]) -> float:
    s = sorted(values)
    n = len(s)
    return (s[(n - 1) // 2] + s[n // 2]) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties_and_several_captions(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_images = 9
    captions = torch.randint(1, 4, (num_images,), generator=g).tolist()  # 1 to 3 captions per image
    text_to_image = [i for i, n in enumerate(captions) for _ in range(n)]
    order = torch.randperm(len(text_to_image), generator=g).tolist()
    text_to_image = [text_to_image[p] for p in order]  # captions in shuffled order
    sim = torch.randint(0, 4, (num_images, len(text_to_image)), generator=g).float()  # many ties
    _check_against_brute_force(sim, text_to_image)
    _check_against_brute_force(torch.randn(num_images, len(text_to_image), generator=g), text_to_image)


def test_chunking_gives_the_same_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(5)
    text_to_image = torch.arange(40) // 4  # 10 images, 4 captions each
    sim = torch.randint(0, 6, (10, 40), generator=g).float()
    whole = retrieval_recall(sim, text_to_image)
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 90)  # 2 image rows per chunk, the last one short
    chunked = retrieval_recall(sim, text_to_image)
    assert torch.equal(whole.image_to_text.ranks, chunked.image_to_text.ranks)
    assert torch.equal(whole.text_to_image.ranks, chunked.text_to_image.ranks)


def test_golden_perfect_and_constant_scores() -> None:
    text_to_image = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = torch.full((3, 6), -1.0)
    perfect[text_to_image, torch.arange(6)] = 1.0
    result = retrieval_recall(perfect, text_to_image, ks=(1,))
    assert result.image_to_text["R@1"] == 1.0 and result.text_to_image["R@1"] == 1.0
    assert result.text_to_image.median_rank == 1.0 and result.image_to_text.mean_rank == 1.0
    # constant scores: ties count against the query, so every rank is the worst possible
    constant = retrieval_recall(torch.zeros(3, 6), text_to_image, ks=(1, 3))
    assert constant.text_to_image.ranks.tolist() == [3] * 6
    assert constant.image_to_text.ranks.tolist() == [5] * 3  # 4 wrong captions rank ahead of the 2 right ones
    assert constant.text_to_image["R@1"] == 0.0 and constant.text_to_image["R@3"] == 1.0
    assert constant.to_dict()["t2i_R@1"] == 0.0 and constant.to_dict()["i2t_mean_rank"] == 5.0


def test_image_without_caption_is_a_distractor_not_a_query() -> None:
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.95, 0.0]])  # image 2 has no caption but outscores image 0
    result = retrieval_recall(sim, torch.tensor([0, 1]), ks=(1,))
    assert result.image_to_text.num_queries == 2 and result.image_to_text.ranks.tolist() == [1, 1]
    assert result.text_to_image.ranks.tolist() == [2, 1]


def test_errors() -> None:
    sim = torch.randn(3, 4)
    ids = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"similarity must have shape \(I, T\)"):
        retrieval_recall(sim[0], ids)
    with pytest.raises(ValueError, match=r"text_to_image must have one image id per text \(shape \(4,\)\)"):
        retrieval_recall(sim, ids[:3])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 3\)"):
        retrieval_recall(sim, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        retrieval_recall(sim, ids.float())
    with pytest.raises(ValueError, match="must not contain NaN"):
        retrieval_recall(sim.index_put((torch.tensor(0), torch.tensor(3)), torch.tensor(float("nan"))), ids)
    with pytest.raises(ValueError, match="ks must be distinct"):
        retrieval_recall(sim, ids, ks=(1, 1))
    with pytest.raises(ValueError, match="ks must be a non-empty"):
        retrieval_recall(sim, ids, ks=())
    with pytest.raises(ValueError, match=r"ks\[i\] must be a positive int"):
        retrieval_recall(sim, ids, ks=(0,))
    with pytest.raises(ValueError, match="empty batch"):
        retrieval_recall(sim[:0], ids)
