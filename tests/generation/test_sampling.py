"""sample_next_token and the penalties: greedy, filters, per-row parameters, frequencies, seeds, HF parity, errors."""

from __future__ import annotations

import pytest
import torch

from vlblocks.generation.processors import apply_repetition_penalty, ban_repeated_ngrams
from vlblocks.generation.sampling import filter_probs, sample_next_token

transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as hf  # noqa: E402


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _hf_keep(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=None):
    chain = [hf.TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if top_k:
        chain.append(hf.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(hf.TopPLogitsWarper(top_p))
    if min_p:
        chain.append(hf.MinPLogitsWarper(min_p))
    out = logits.clone()
    for proc in chain:
        out = proc(None, out)
    return torch.isfinite(out)


def test_temperature_zero_is_argmax():
    logits = torch.randn(16, 50)
    torch.testing.assert_close(sample_next_token(logits, temperature=0.0), logits.argmax(-1))
    temps = torch.zeros(16)
    torch.testing.assert_close(sample_next_token(logits, temperature=temps, generator=_gen()), logits.argmax(-1))


@pytest.mark.parametrize(
    "kw",
    [dict(top_k=5), dict(top_p=0.6), dict(min_p=0.3), dict(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05),
     dict(temperature=1.3, top_p=0.9)],
)
def test_kept_set_equals_hf_warpers(kw):
    logits = torch.randn(32, 200) * 3
    probs, index = filter_probs(logits, **kw)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    if index is None:
        keep = probs > 0
    else:
        keep.scatter_(1, index, probs > 0)
    expected = _hf_keep(logits, kw.get("temperature", 1.0), kw.get("top_k", 0), kw.get("top_p", 1.0),
                        kw.get("min_p"))
    assert torch.equal(keep, expected)
    assert keep.sum() < keep.numel()  # control: something was filtered


def test_filtered_tokens_never_picked():
    logits = torch.randn(8, 100)
    allowed = _hf_keep(logits, top_k=10, top_p=0.7)
    allowed_p = _hf_keep(logits, top_p=0.5)
    for seed in range(20):
        tok = sample_next_token(logits, top_k=10, top_p=0.7, generator=_gen(seed))
        assert allowed.gather(1, tok[:, None]).all()
        tok = sample_next_token(logits, top_p=0.5, generator=_gen(seed))
        assert allowed_p.gather(1, tok[:, None]).all()


def test_per_row_parameters_act_per_row():
    logits = torch.randn(4, 60).repeat(2, 1)  # rows i and i + 4 are the same logits
    kw = dict(temperature=torch.tensor([0.0, 1.0, 0.5, 1.0] * 2), top_k=torch.tensor([0, 3, 0, 0] * 2),
              top_p=torch.tensor([1.0, 1.0, 0.5, 1.0] * 2), min_p=torch.tensor([0.0, 0.0, 0.0, 0.2] * 2))
    probs, _ = filter_probs(logits, **kw)
    for row, single in enumerate([dict(temperature=1.0), dict(top_k=3), dict(temperature=0.5, top_p=0.5),
                                  dict(min_p=0.2)]):
        alone, index = filter_probs(logits[row : row + 1], **single)
        if index is not None:
            alone = torch.zeros(1, 60).scatter_(1, index, alone)
        torch.testing.assert_close(probs[row] > 0, alone[0] > 0)
        torch.testing.assert_close(probs[row] / probs[row].sum(), alone[0] / alone[0].sum())
    assert (probs[1] > 0).sum() == 3 and (probs[0] > 0).sum() == 60  # control: the rows differ
    tok = sample_next_token(logits, generator=_gen(), **kw)
    assert tok[0] == logits[0].argmax() and tok[4] == logits[4].argmax()


def test_frequencies_match_renormalised_distribution_chi_square():
    torch.manual_seed(3)
    logits = torch.randn(1, 12) * 1.5
    n = 20000
    tok = sample_next_token(logits.expand(n, -1), temperature=0.8, top_k=8, top_p=0.9, generator=_gen(7))
    probs, index = filter_probs(logits, temperature=0.8, top_k=8, top_p=0.9)
    expected = torch.zeros(12).scatter_(0, index[0], probs[0] / probs[0].sum()) * n
    counts = torch.bincount(tok, minlength=12).float()
    kept = expected > 0
    assert counts[~kept].sum() == 0
    chi2 = ((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum().item()
    dof = int(kept.sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5  # far below the 0.999 quantile
    # control: against the untempered distribution the same counts fail
    plain = logits[0].softmax(-1) * n
    assert ((counts - plain) ** 2 / plain).sum().item() > 10 * chi2


def test_wide_vocabulary_two_level_race_and_nucleus():
    """Over > 1024 candidates the race runs in two levels and top-p uses the histogram search."""
    torch.manual_seed(8)
    v = 5000
    logits = torch.full((1, v), -30.0)
    hot = torch.tensor([3, 700, 1500, 2222, 4999])  # in different groups of the two-level race
    logits[0, hot] = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0])
    n = 8000
    tok = sample_next_token(logits.expand(n, -1), generator=_gen(3))
    counts = torch.bincount(tok, minlength=v).float()[hot]
    expected = logits[0, hot].softmax(-1) * n
    assert counts.sum() >= n - 2  # the -30 tokens carry ~1e-10 of the mass
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 4 + 4 * 8**0.5
    flat = torch.zeros(1, v)
    flat[0, 4000] = 3.0  # control: a different distribution fails the same test
    other = torch.bincount(sample_next_token(flat.expand(n, -1), generator=_gen(3)), minlength=v).float()[hot]
    assert ((other - expected) ** 2 / expected).sum().item() > 100 * chi2
    wide = torch.randn(4, 50257) * 2.5
    for top_p in (0.5, 0.9, 0.99):
        keep, _ = filter_probs(wide, top_p=top_p)
        diff = ((keep > 0) != _hf_keep(wide, top_p=top_p)).sum(-1)
        assert diff.max() <= 1  # HF's float32 cumsum rounds at the nucleus edge
        allowed = keep > 0
        tok = sample_next_token(wide, top_p=top_p, generator=_gen(1))
        assert allowed.gather(1, tok[:, None]).all()


def test_same_seed_same_tokens():
    logits = torch.randn(16, 300)
    a = sample_next_token(logits, top_p=0.9, generator=_gen(5))
    b = sample_next_token(logits, top_p=0.9, generator=_gen(5))
    c = sample_next_token(logits, top_p=0.9, generator=_gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kw, message",
    [(dict(top_p=0.0), "top_p must be a number in \\(0, 1\\]"), (dict(top_p=1.5), "top_p must be"),
     (dict(top_k=-1), "top_k must be a non-negative int"), (dict(temperature=-0.5), "temperature must be >= 0"),
     (dict(min_p=2.0), "min_p must be"), (dict(temperature=torch.ones(3)), "temperature as a tensor must have")],
)
def test_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        sample_next_token(torch.randn(2, 10), **kw)


def test_repetition_penalty_equals_hf():
    logits, ids = torch.randn(4, 30), torch.randint(0, 30, (4, 12))
    expected = hf.RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, ids, 1.3), expected)
    per_row = apply_repetition_penalty(logits, ids, torch.tensor([1.3, 1.0, 1.3, 1.0]))
    torch.testing.assert_close(per_row[0], expected[0])
    torch.testing.assert_close(per_row[1], logits[1])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_equals_hf(n):
    ids = torch.randint(0, 4, (6, 14))  # a small vocabulary: many repeats
    logits = torch.randn(6, 4)
    expected = hf.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
    torch.testing.assert_close(ban_repeated_ngrams(logits, ids, n), expected)
    # a longer buffer with the current length as a tensor gives the same
    buffer = torch.cat([ids, torch.randint(0, 4, (6, 5))], dim=1)
    got = ban_repeated_ngrams(logits, buffer, n, length=torch.tensor(14))
    torch.testing.assert_close(got, expected)
    assert torch.isinf(expected).any()  # control: something was banned
