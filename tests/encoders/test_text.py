"""Tests of vlblocks.encoders.text: tiny presets, parity with HF BERT / RoBERTa / CLIP text, errors."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from vlblocks.encoders import EncoderOutput, TextEncoder

WORDS = "a an the red green blue circle square triangle left right of is what color shape there".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]", "[MASK]"]
TEXTS = ["what color is the circle", "a red square left of the blue triangle", "is there a circle"]
HF_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture
def tokenizer() -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer: [PAD]=0, ..., adds [CLS] ... [SEP]."""
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    names = ("pad", "unk", "cls", "sep", "bos", "eos", "mask")
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, **{f"{n}_token": s for n, s in zip(names, SPECIALS)}
    )


def _batch(tokenizer) -> dict[str, torch.Tensor]:
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "the batch must contain padding"
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _trainable(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- level 1


@pytest.mark.parametrize("kind", ["bert", "roberta", "clip"])
def test_tiny_shapes_mask_and_gradients(kind: str, tokenizer) -> None:
    enc = TextEncoder.tiny(kind, tokenizer=tokenizer, dim=32, max_positions=16)
    batch = _batch(tokenizer)
    out = enc(**batch)
    prefix = 1 if kind == "clip" else 0
    b, t = batch["input_ids"].shape
    assert isinstance(out, EncoderOutput) and enc.dim == 32 and enc.num_prefix_tokens == prefix
    assert out.tokens.shape == (b, prefix + t, 32) and out.mask.dtype == torch.bool
    assert torch.equal(out.mask[:, prefix:], batch["attention_mask"].bool()) and out.mask[:, :prefix].all()
    assert torch.equal(out.cls, out.tokens[:, 0]) and torch.isfinite(out.tokens).all()
    assert enc.model.config.vocab_size == len(tokenizer) and enc.model.config.pad_token_id == 0
    (out.tokens[out.mask].square().mean() + out.cls.sum()).backward()
    no_grad = [
        n
        for n, p in enc.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    # only the embedding rows of unseen words get no gradient, never whole tensors
    assert no_grad == []


def test_roberta_positions_fit_max_positions(tokenizer) -> None:
    enc = TextEncoder.tiny("roberta", tokenizer=tokenizer, dim=32, max_positions=8)
    assert enc.model.config.max_position_embeddings == 10 and enc.model.embeddings.padding_idx == 0
    ids = torch.full((2, 8), tokenizer.convert_tokens_to_ids("red"))
    out = enc(ids, torch.ones_like(ids))  # the longest allowed input uses position ids 1..8 (< 10)
    assert out.tokens.shape == (2, 8, 32)


def test_freeze_unfreeze_and_eval_mode(tokenizer) -> None:
    enc = TextEncoder.tiny("bert", tokenizer=tokenizer, dim=32)
    before = _trainable(enc)
    assert enc.freeze() is enc and enc.frozen and _trainable(enc) == []
    enc.train()
    assert not any(m.training for m in enc.model.modules())
    assert enc.unfreeze() is enc and _trainable(enc) == before and enc.model.training


def test_batched_equals_one_by_one_and_padding_is_ignored(tokenizer) -> None:
    enc = TextEncoder.tiny("bert", tokenizer=tokenizer, dim=32).eval()
    batch = enc.tokenize(TEXTS)
    with torch.no_grad():
        out = enc(**batch)
        for i, text in enumerate(TEXTS):
            single = enc(**enc.tokenize(text))
            n = single.tokens.shape[1]
            torch.testing.assert_close(out.tokens[i, :n], single.tokens[0], rtol=1e-5, atol=1e-5)
    assert out.mask.sum(1).tolist() == [len(t.split()) + 2 for t in TEXTS]


def test_state_dict_is_safetensors_round_trip(tokenizer, tmp_path) -> None:
    enc = TextEncoder.tiny("roberta", tokenizer=tokenizer, dim=32).eval()
    save_file(enc.state_dict(), tmp_path / "text.safetensors")
    torch.manual_seed(3)
    other = TextEncoder.tiny("roberta", tokenizer=tokenizer, dim=32).eval()
    other.load_state_dict(load_file(tmp_path / "text.safetensors"))
    batch = _batch(tokenizer)
    torch.testing.assert_close(other(**batch).tokens, enc(**batch).tokens, rtol=0, atol=0)


# ----------------------------------------------------------------------------- level 4: parity with HF


def _hf_text(kind: str, tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model to save, module whose outputs the encoder must reproduce)."""
    vocab = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if kind == "bert":
        model = tf.BertModel(tf.BertConfig(max_position_embeddings=32, **vocab, **HF_COMMON))
        return model, model
    if kind == "roberta":
        model = tf.RobertaModel(
            tf.RobertaConfig(max_position_embeddings=34, type_vocab_size=1, **vocab, **HF_COMMON)
        )
        return model, model
    text = dict(max_position_embeddings=32, eos_token_id=tokenizer.sep_token_id, **vocab, **HF_COMMON)
    if kind == "clip-text":
        model = tf.CLIPTextModel(tf.CLIPTextConfig(**text))
        return model, model
    vision = dict(image_size=32, patch_size=8, **HF_COMMON)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    return model, model.text_model


@pytest.mark.parametrize("kind", ["bert", "roberta", "clip-text", "clip"])
def test_from_pretrained_matches_hf_model(kind: str, tokenizer, tmp_path) -> None:
    model, reference = _hf_text(kind, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    enc = TextEncoder.from_pretrained(tmp_path).eval()
    assert enc.tokenizer(TEXTS[0])["input_ids"] == tokenizer(TEXTS[0])["input_ids"]
    batch = _batch(enc.tokenizer)
    with torch.no_grad():
        expected = reference.eval()(**batch)
        out = enc(**batch)
    if kind.startswith("clip"):
        assert isinstance(enc.model, tf.CLIPTextModel) and enc.num_prefix_tokens == 1
        torch.testing.assert_close(out.tokens[:, 1:], expected.last_hidden_state, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            out.cls, expected.pooler_output, rtol=0, atol=1e-6
        )  # the end-of-text token
        eos = batch["attention_mask"].sum(1) - 1
        torch.testing.assert_close(
            out.cls, expected.last_hidden_state[torch.arange(3), eos], rtol=0, atol=1e-6
        )
    else:
        assert enc.num_prefix_tokens == 0 and getattr(enc.model, "pooler", None) is None
        torch.testing.assert_close(out.tokens, expected.last_hidden_state, rtol=0, atol=1e-6)
    assert torch.equal(out.mask[:, enc.num_prefix_tokens :], batch["attention_mask"].bool())


def test_pretrained_false_gives_same_architecture_random_weights(tokenizer, tmp_path) -> None:
    model, _ = _hf_text("bert", tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    enc = TextEncoder.from_pretrained(str(tmp_path), pretrained=False)
    assert isinstance(enc.model, tf.BertModel) and enc.model.pooler is None
    emb = enc.model.embeddings.word_embeddings.weight
    assert emb.shape == model.embeddings.word_embeddings.weight.shape
    assert not torch.equal(emb, model.embeddings.word_embeddings.weight)


def test_user_model_with_pooler_keeps_pooler_frozen(tokenizer) -> None:
    model, _ = _hf_text("bert", tokenizer)
    enc = TextEncoder(model, tokenizer)
    assert {n for n, p in enc.named_parameters() if not p.requires_grad} == {
        "model.pooler.dense.weight",
        "model.pooler.dense.bias",
    }


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise(tokenizer) -> None:
    enc = TextEncoder.tiny("bert", tokenizer=tokenizer, dim=16)
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="rank 2"):
        enc(ids[0])
    with pytest.raises(TypeError, match="integer tensor"):
        enc(ids.float())
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        enc(ids, torch.ones(2, 4))
    with pytest.raises(TypeError, match="input_ids must be a torch.Tensor"):
        enc([[1, 2]])
    with pytest.raises(ValueError, match="tokenizer is None"):
        TextEncoder(enc.model).tokenize("a")
    out = enc(ids)  # no attention mask: every token is real
    assert out.mask is None and out.tokens.shape == (2, 5, 16)


@pytest.mark.parametrize("kind", ["bert", "roberta", "clip"])
def test_tiny_dropout_reaches_the_model(kind: str, tokenizer) -> None:
    batch = _batch(tokenizer)
    quiet = TextEncoder.tiny(kind, tokenizer=tokenizer, dim=32, dropout=0.0).train()
    assert torch.equal(quiet(**batch).tokens, quiet(**batch).tokens)  # training mode, and nothing random
    noisy = TextEncoder.tiny(kind, tokenizer=tokenizer, dim=32, dropout=0.5).train()
    torch.manual_seed(0)
    first = noisy(**batch).tokens
    assert not torch.equal(first, noisy(**batch).tokens)
    config = noisy.model.config
    names = ["attention_dropout"] if kind == "clip" else ["hidden_dropout_prob", "attention_probs_dropout_prob"]
    assert [getattr(config, n) for n in names] == [0.5] * len(names)
    default = TextEncoder.tiny(kind, tokenizer=tokenizer, dim=32).model.config  # None: the family's default
    assert [getattr(default, n) for n in names] == [0.0 if kind == "clip" else 0.1] * len(names)


def test_bad_arguments_raise(tokenizer, tmp_path) -> None:
    with pytest.raises(ValueError, match="dropout"):
        TextEncoder.tiny("bert", tokenizer=tokenizer, dropout=1.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        TextEncoder.tiny("gpt2", tokenizer=tokenizer)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        TextEncoder.tiny("bert", tokenizer=None)
    with pytest.raises(ValueError, match="divisible by heads"):
        TextEncoder.tiny("bert", tokenizer=tokenizer, dim=30, heads=4)
    with pytest.raises(ValueError, match="max_positions must be a positive int"):
        TextEncoder.tiny("roberta", tokenizer=tokenizer, max_positions=0)
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        TextEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TextEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        TextEncoder.from_pretrained("bert-base-uncased", trust_remote_code=True)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        TextEncoder(torch.nn.Embedding(4, 4))
    with pytest.raises(TypeError, match="text model"):
        TextEncoder(tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=8, **HF_COMMON)))
    no_pad = tf.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="pad token"):
        TextEncoder.tiny("bert", tokenizer=no_pad)
