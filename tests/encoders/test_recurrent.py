"""GRUTextEncoder: shapes and gradients, padding invariance (batched == one by one), the summary formula, word
order, errors."""

from __future__ import annotations

import pytest
import torch

from vlblocks.data import build_word_tokenizer
from vlblocks.encoders import GRUTextEncoder

TEXTS = [
    "one shape: a small red circle at the top left",
    "two shapes: a large blue square in the center and a small red circle on the right",
    "a red circle",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(TEXTS + ["a blue circle on the left"])


def encoder(tokenizer, **kw) -> GRUTextEncoder:
    torch.manual_seed(0)
    return GRUTextEncoder(tokenizer, dim=16, depth=2, **kw).eval()


def test_shapes_mask_and_every_parameter_learns(tokenizer) -> None:
    enc = encoder(tokenizer).train()
    ids = tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = enc(ids["input_ids"], ids["attention_mask"])
    longest = int(ids["attention_mask"].sum(1).max())
    assert out.tokens.shape == (3, 1 + longest, 16) and out.cls.shape == (3, 16)
    assert torch.equal(out.tokens[:, 0], out.cls) and torch.isfinite(out.tokens).all()
    assert out.mask.dtype == torch.bool and torch.equal(
        out.mask[:, 1:], ids["attention_mask"][:, :longest].bool()
    )
    assert out.mask[:, 0].all()
    out.cls.pow(2).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_batched_with_padding_equals_one_by_one(tokenizer) -> None:
    enc = encoder(tokenizer)
    ids = tokenizer(TEXTS, padding="max_length", max_length=40, return_tensors="pt")  # extra all-pad columns
    batched = enc(ids["input_ids"], ids["attention_mask"]).cls
    for i, text in enumerate(TEXTS):
        alone = tokenizer([text], return_tensors="pt")
        one = enc(alone["input_ids"], alone["attention_mask"]).cls
        assert torch.allclose(batched[i], one[0], atol=1e-5)
    # control: counting a padding token as real changes the summary
    mask = ids["attention_mask"].clone()
    mask[2, int(mask[2].sum())] = 1
    assert not torch.allclose(enc(ids["input_ids"], mask).cls[2], batched[2], atol=1e-4)


def test_summary_is_the_masked_mean_of_the_word_states_written_out(tokenizer) -> None:
    enc = encoder(tokenizer)
    ids = tokenizer([TEXTS[2]], return_tensors="pt")["input_ids"]  # (1, T), no padding
    states, _ = enc.rnn(enc.embed(ids))  # (1, T, 2D): a plain unpacked GRU run
    words = enc.norm(enc.proj(states))
    out = enc(ids)
    assert torch.allclose(out.tokens[:, 1:], words, atol=1e-6)
    assert torch.allclose(out.cls, words.mean(dim=1), atol=1e-6)


def test_word_order_binds_attributes(tokenizer) -> None:
    enc = encoder(tokenizer)
    a = tokenizer(["a red circle on the left"], return_tensors="pt")["input_ids"]
    b = tokenizer(["a blue circle on the left"], return_tensors="pt")["input_ids"]
    swapped = tokenizer(["a left circle on the red"], return_tensors="pt")["input_ids"]  # same bag of words
    assert not torch.allclose(enc(a).cls, enc(swapped).cls, atol=1e-4)  # a bag-of-words mean would be equal
    assert not torch.allclose(enc(a).cls, enc(b).cls, atol=1e-4)


def test_errors(tokenizer) -> None:
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        GRUTextEncoder(None)
    with pytest.raises(ValueError, match="dim"):
        GRUTextEncoder(tokenizer, dim=0)
    with pytest.raises(ValueError, match="depth"):
        GRUTextEncoder(tokenizer, depth=0)
    enc = encoder(tokenizer)
    ids = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="at least one real token"):
        enc(ids["input_ids"], torch.zeros_like(ids["attention_mask"]))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, "):
        enc(torch.full((1, 3), enc.vocab_size))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        enc(ids["input_ids"], ids["attention_mask"][:, :2])
