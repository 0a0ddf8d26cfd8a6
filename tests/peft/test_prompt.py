"""Soft prompts: concatenation golden values, real tiny HF GPT-2 / BERT through `inputs_embeds=`, gradients only on
the prompt, training lowers the loss, the masked-prompt equivalence check, save/load, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from vlblocks.peft.inject import mark_only_peft_trainable
from vlblocks.peft.io import load_adapter, save_adapter
from vlblocks.peft.prompt import SoftPrompt, SoftPromptOutput

P, T, D = 4, 6, 32


def _gpt2() -> GPT2LMHeadModel:
    # a wider init than GPT-2's 0.02 gives a random model peaked logits, so a prompt can move its loss in a few steps
    config = GPT2Config(n_embd=D, n_layer=2, n_head=2, vocab_size=100, n_positions=32, initializer_range=0.2)
    return GPT2LMHeadModel(config).eval()


def _bert() -> BertModel:
    config = BertConfig(
        hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    return BertModel(config, add_pooling_layer=False).eval()


class _Prompted(torch.nn.Module):
    """A frozen HF model with a soft prompt in front of its input embeddings, as a user would write it."""

    def __init__(self, model: torch.nn.Module, prompt: SoftPrompt) -> None:
        super().__init__()
        self.model = model
        self.prompt = prompt

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None):
        out = self.prompt(self.model.get_input_embeddings()(ids), mask, labels)
        return self.model(
            inputs_embeds=out.inputs_embeds, attention_mask=out.attention_mask, labels=out.labels
        )


def test_concatenation_golden_values() -> None:
    prompt = SoftPrompt(P, D)
    x = torch.randn(2, T, D)
    mask = torch.tensor([[1] * T, [1] * 3 + [0] * 3])
    labels = torch.randint(0, 100, (2, T))
    out = prompt(x, mask, labels)
    assert isinstance(out, SoftPromptOutput)
    assert out.inputs_embeds.shape == (2, P + T, D)
    assert torch.equal(out.inputs_embeds[:, :P], prompt.embedding.detach().expand(2, P, D))
    assert torch.equal(out.inputs_embeds[:, P:], x)
    assert out.attention_mask.dtype == mask.dtype
    assert torch.equal(out.attention_mask, torch.cat([torch.ones(2, P, dtype=torch.long), mask], 1))
    assert torch.equal(out.labels, torch.cat([torch.full((2, P), -100), labels], 1))

    for dtype in (torch.bool, torch.float32):
        got = prompt(x, mask.to(dtype)).attention_mask
        assert got.dtype == dtype and torch.equal(
            got, torch.cat([torch.ones(2, P), mask.float()], 1).to(dtype)
        )
    none = prompt(x)
    assert none.labels is None and torch.equal(none.attention_mask, torch.ones(2, P + T, dtype=torch.long))
    half = prompt(x.double())
    assert half.inputs_embeds.dtype == torch.float64  # the prompt follows the inputs' dtype


def test_init_random_tensor_and_token_ids() -> None:
    big = SoftPrompt(200, 64)
    assert big.embedding.shape == (200, 64) and big.embedding.requires_grad
    assert 0.018 < big.embedding.std().item() < 0.022 and abs(big.embedding.mean().item()) < 0.002
    assert SoftPrompt.is_peft_module is True

    init = torch.randn(P, D)
    prompt = SoftPrompt(P, D, init=init)
    assert torch.equal(prompt.embedding, init)
    with torch.no_grad():
        prompt.embedding.add_(1.0)
    assert not torch.equal(prompt.embedding, init)  # a copy, not an alias

    emb = torch.nn.Embedding(100, D)
    ids = [5, 17, 17, 99]
    from_ids = SoftPrompt.from_token_ids(emb, ids)
    assert from_ids.num_tokens == 4 and from_ids.dim == D
    assert torch.equal(from_ids.embedding, emb.weight[ids])
    with torch.no_grad():
        from_ids.embedding.zero_()
    assert emb.weight[ids].abs().sum() > 0  # the vocabulary embedding is untouched
    assert torch.equal(SoftPrompt.from_token_ids(emb, torch.tensor(ids)).embedding, emb.weight[ids])


def test_gpt2_prompt_tuning_trains_only_the_prompt_and_lowers_the_loss() -> None:
    gpt2 = _gpt2()
    model = _Prompted(gpt2, SoftPrompt.from_token_ids(gpt2.get_input_embeddings(), [1, 2, 3, 4]))
    ids = torch.randint(0, 100, (2, T))
    mask = torch.ones(2, T, dtype=torch.long)
    mark_only_peft_trainable(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt.embedding"]

    out = model(ids, mask, labels=ids)
    assert out.logits.shape == (2, P + T, 100)
    # -100 on the virtual labels: every real token is predicted (the first one from the last virtual position)
    manual = F.cross_entropy(out.logits[:, P - 1 : -1].reshape(-1, 100), ids.reshape(-1))  # (B*T, V)
    torch.testing.assert_close(out.loss, manual)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert (
            (p.grad is not None and p.grad.abs().sum() > 0) if name == "prompt.embedding" else p.grad is None
        )

    opt = torch.optim.Adam([model.prompt.embedding], lr=0.1)
    first = out.loss.item()
    for _ in range(10):
        opt.zero_grad()
        loss = model(ids, mask, labels=ids).loss
        loss.backward()
        opt.step()
    assert model(ids, mask, labels=ids).loss.item() < 0.8 * first


def test_bert_prompt_tuning_trains_only_the_prompt_and_lowers_the_loss() -> None:
    model = _Prompted(_bert(), SoftPrompt(P, D))
    ids = torch.randint(0, 100, (2, T))
    mask = torch.tensor([[1] * T, [1] * 4 + [0] * 2])
    mark_only_peft_trainable(model)
    with torch.no_grad():  # a reachable fixed target: the [CLS] output under another prompt
        target = _Prompted(model.model, SoftPrompt(P, D, init=torch.randn(P, D)))(
            ids, mask
        ).last_hidden_state[:, P]
    hidden = model(ids, mask).last_hidden_state
    assert hidden.shape == (2, P + T, D) and torch.isfinite(hidden).all()
    loss = F.mse_loss(hidden[:, P], target)  # the real [CLS] position
    loss.backward()
    for name, p in model.named_parameters():
        assert (
            (p.grad is not None and p.grad.abs().sum() > 0) if name == "prompt.embedding" else p.grad is None
        )

    opt = torch.optim.Adam([model.prompt.embedding], lr=0.05)
    first = loss.item()
    for _ in range(10):
        opt.zero_grad()
        loss = F.mse_loss(model(ids, mask).last_hidden_state[:, P], target)
        loss.backward()
        opt.step()
    assert F.mse_loss(model(ids, mask).last_hidden_state[:, P], target).item() < 0.5 * first


@torch.no_grad()
def test_masked_prompt_with_shifted_positions_equals_base_bert() -> None:
    """The equivalence check: an attended prompt changes the output; a masked-out one with the real tokens at their
    original position ids leaves the real-token outputs equal to the base model's."""
    bert = _bert()
    prompt = SoftPrompt(P, D, init=torch.randn(P, D))
    ids = torch.randint(0, 100, (2, T))
    mask = torch.tensor([[1] * T, [1] * 4 + [0] * 2])
    base = bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)

    out = prompt(bert.get_input_embeddings()(ids), mask)
    positions = torch.cat([torch.arange(P), torch.arange(T)]).expand(2, -1)  # (B, P+T): real tokens at 0..T-1
    attended = bert(
        inputs_embeds=out.inputs_embeds, attention_mask=out.attention_mask, position_ids=positions
    )
    assert not torch.allclose(attended.last_hidden_state[:, P:], base, atol=1e-3)

    hidden_mask = out.attention_mask.clone()
    hidden_mask[:, :P] = 0
    masked = bert(inputs_embeds=out.inputs_embeds, attention_mask=hidden_mask, position_ids=positions)
    real = mask.bool()
    torch.testing.assert_close(masked.last_hidden_state[:, P:][real], base[real], atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _Prompted(_gpt2(), SoftPrompt(P, D))
    save_adapter(model, tmp_path)
    other = _Prompted(model.model, SoftPrompt(P, D))
    assert not torch.equal(other.prompt.embedding, model.prompt.embedding)
    load_adapter(other, tmp_path)
    assert torch.equal(other.prompt.embedding, model.prompt.embedding)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0, D), {}, ValueError, "num_tokens must be a positive int, got 0"),
        ((P, -1), {}, ValueError, "dim must be a positive int, got -1"),
        ((2.0, D), {}, ValueError, "num_tokens must be a positive int"),
        ((P, D), {"init": "zeros"}, ValueError, "init must be 'random' or a"),
        (
            (P, D),
            {"init": torch.randn(P + 1, D)},
            ValueError,
            rf"init must have shape \({P}, {D}\), got \({P + 1}, {D}\)",
        ),
        (
            (P, D),
            {"init": torch.zeros(P, D, dtype=torch.long)},
            TypeError,
            "init must be a floating-point tensor",
        ),
        ((P, D), {"init": [[0.0] * D] * P}, TypeError, "init must be 'random' or a torch.Tensor, got list"),
    ],
)
def test_constructor_errors(args: tuple, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SoftPrompt(*args, **kwargs)


def test_forward_and_from_token_ids_errors() -> None:
    prompt = SoftPrompt(P, D)
    x = torch.randn(2, T, D)
    with pytest.raises(ValueError, match=rf"inputs_embeds must have shape \(B, T, {D}\), got \(2, {D}\)"):
        prompt(torch.randn(2, D))
    with pytest.raises(ValueError, match=rf"inputs_embeds must have shape \(B, T, {D}\), got \(2, {T}, 8\)"):
        prompt(torch.randn(2, T, 8))
    with pytest.raises(TypeError, match="inputs_embeds must be a floating-point tensor, got tensor of dtype"):
        prompt(torch.zeros(2, T, D, dtype=torch.long))
    with pytest.raises(TypeError, match="inputs_embeds must be a floating-point tensor, got list"):
        prompt([[0.0]])
    with pytest.raises(
        ValueError, match=rf"attention_mask must have shape \(B, T\) = \(2, {T}\).*got \(2, {T + 1}\)"
    ):
        prompt(x, torch.ones(2, T + 1))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor, got list"):
        prompt(x, [[1] * T] * 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(B, T\).*got \(3, "):
        prompt(x, None, torch.zeros(3, T, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an integer tensor, got dtype torch.float32"):
        prompt(x, None, torch.zeros(2, T))

    emb = torch.nn.Embedding(10, D)
    with pytest.raises(ValueError, match=r"token_ids must lie in \[0, 10\), got \[3, 10\]"):
        SoftPrompt.from_token_ids(emb, [3, 10])
    with pytest.raises(ValueError, match="token_ids must lie in"):
        SoftPrompt.from_token_ids(emb, [-1])
    with pytest.raises(ValueError, match="token_ids must be a non-empty 1-D sequence of ints"):
        SoftPrompt.from_token_ids(emb, [])
    with pytest.raises(ValueError, match="token_ids must be a non-empty 1-D sequence of ints"):
        SoftPrompt.from_token_ids(emb, [[1, 2]])
    with pytest.raises(ValueError, match="token_ids must be a non-empty 1-D sequence of ints"):
        SoftPrompt.from_token_ids(emb, torch.tensor([1.0]))
    with pytest.raises(TypeError, match=r"embedding_layer must have a 2-D \(V, D\) weight, got ReLU"):
        SoftPrompt.from_token_ids(torch.nn.ReLU(), [1])
