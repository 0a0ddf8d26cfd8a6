"""record_attention on HF transformers models (tiny random configs, offline): parity with eager output_attentions.

Each model is built twice with the same weights: once with attn_implementation="eager" (the reference, run with
output_attentions=True) and once with "sdpa" (recorded). The recorded sdpa model must give the eager maps and exactly
its own unrecorded outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from vlblocks.hooks import attention_layers, record_attention  # noqa: E402

B = 2


def _pair(model_cls, config_cls, **config):
    """(eager, sdpa) copies of one randomly initialised tiny model."""
    eager = model_cls(config_cls(**config, attn_implementation="eager")).eval()
    sdpa = model_cls(config_cls(**config, attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    return eager, sdpa


def _assert_maps(rec, names, reference) -> None:
    assert len(names) == len(reference)
    for name, ref in zip(names, reference):
        torch.testing.assert_close(rec.maps[name], ref.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["ViT", "Dinov2"])
def test_vit_sdpa_and_eager_recordings_equal_output_attentions(family: str) -> None:
    eager, sdpa = _pair(
        getattr(transformers, f"{family}Model"), getattr(transformers, f"{family}Config"),
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
    )  # fmt: skip
    x = torch.randn(B, 3, 32, 32)
    reference = eager(x, output_attentions=True).attentions
    expected = sdpa(x).last_hidden_state
    with record_attention(sdpa) as rec:
        out = sdpa(x).last_hidden_state
    assert torch.equal(out, expected)
    _assert_maps(rec, rec.layers, reference)
    with record_attention(eager) as rec_eager:
        eager(x)
    _assert_maps(rec_eager, rec_eager.layers, reference)
    # control: the two layers' maps differ, so a mix-up would show
    assert not torch.allclose(reference[0], reference[1], atol=1e-3)


def test_bert_with_padding_equals_output_attentions() -> None:
    eager, sdpa = _pair(
        transformers.BertModel, transformers.BertConfig,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50,
    )  # fmt: skip
    ids = torch.randint(0, 50, (B, 6))
    attention_mask = torch.ones(B, 6, dtype=torch.long)
    attention_mask[1, 4:] = 0
    reference = eager(ids, attention_mask=attention_mask, output_attentions=True).attentions
    with record_attention(sdpa, "encoder.layer.*") as rec:
        sdpa(ids, attention_mask=attention_mask)
    assert rec.layers == ("encoder.layer.0.attention.self", "encoder.layer.1.attention.self")
    _assert_maps(rec, rec.layers, reference)
    assert rec.maps["encoder.layer.0.attention.self"][1, :, :, 4:].max() < 1e-6  # padding gets no attention


def _gpt2_pair():
    return _pair(
        transformers.GPT2LMHeadModel, transformers.GPT2Config,
        n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16, add_cross_attention=True,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip


def test_gpt2_cross_and_causal_self_attention_equal_output_attentions() -> None:
    eager, sdpa = _gpt2_pair()
    ids, image = torch.randint(0, 50, (B, 7)), torch.randn(B, 5, 32)
    reference = eager(ids, encoder_hidden_states=image, output_attentions=True)
    expected = sdpa(ids, encoder_hidden_states=image).logits
    with record_attention(sdpa) as rec:
        logits = sdpa(ids, encoder_hidden_states=image).logits
    assert torch.equal(logits, expected)
    _assert_maps(rec, [n for n in rec.layers if n.endswith("crossattention")], reference.cross_attentions)
    _assert_maps(rec, [n for n in rec.layers if n.endswith(".attn")], reference.attentions)
    assert (
        rec.maps["transformer.h.0.attn"][:, :, 0, 1:].max() == 0
    )  # causal: the first token sees itself only
    # selected rows of a causal layer keep their own causal limit
    with record_attention(sdpa, "transformer.h.1.attn", rows=[3]) as row:
        sdpa(ids, encoder_hidden_states=image)
    torch.testing.assert_close(
        row.maps["transformer.h.1.attn"], reference.attentions[1][:, :, [3]], atol=1e-5, rtol=0
    )


def test_hf_unselected_layers_keep_the_shared_config_and_the_kernel(monkeypatch) -> None:
    _, sdpa = _gpt2_pair()
    ids, image = torch.randint(0, 50, (B, 7)), torch.randn(B, 5, 32)
    kernel_calls: list[int] = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: kernel_calls.append(1) or real(*a, **k)
    )
    implementations: dict[str, str] = {}
    for name in attention_layers(sdpa):
        module = sdpa.get_submodule(name)
        module.register_forward_pre_hook(
            lambda m, _a, n=name: implementations.__setitem__(n, m.config._attn_implementation)
        )
    with record_attention(sdpa, "*.h.1.crossattention") as rec:
        sdpa(ids, encoder_hidden_states=image)
    assert implementations.pop("transformer.h.1.crossattention") == "vlblocks_record"
    assert set(implementations.values()) == {"sdpa"}
    assert len(kernel_calls) == 4  # every layer, the recorded one included, ran the sdpa kernel
    assert list(rec.maps) == ["transformer.h.1.crossattention"]
    assert all(sdpa.get_submodule(n).config is sdpa.config for n in attention_layers(sdpa))


def test_hf_state_restored_after_exception_and_silent_layer_named() -> None:
    _, sdpa = _gpt2_pair()
    ids = torch.randint(0, 50, (B, 7))
    with pytest.raises(ValueError, match="inside"):
        with record_attention(sdpa):
            raise ValueError("inside")
    assert all(sdpa.get_submodule(n).config is sdpa.config for n in attention_layers(sdpa))
    with pytest.raises(RuntimeError, match=r"recorded nothing: \['transformer.h.0.crossattention', "):
        with record_attention(sdpa):
            sdpa(ids)  # no encoder states: the cross-attention layers never run
    assert sdpa.config._attn_implementation == "sdpa"


def test_llama_grouped_query_attention_with_padding() -> None:
    """The language model inside LLaVA: grouped-query attention, rotary positions, causal + padding mask."""
    eager, sdpa = _pair(
        transformers.LlamaModel, transformers.LlamaConfig,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=50, max_position_embeddings=32,
    )  # fmt: skip
    ids = torch.randint(0, 50, (B, 6))
    attention_mask = torch.ones(B, 6, dtype=torch.long)
    attention_mask[0, :2] = 0  # left padding
    reference = eager(ids, attention_mask=attention_mask, output_attentions=True).attentions
    expected = sdpa(ids, attention_mask=attention_mask).last_hidden_state
    with record_attention(sdpa, head_reduce="mean") as rec:
        out = sdpa(ids, attention_mask=attention_mask).last_hidden_state
    assert torch.equal(out, expected)
    _assert_maps(rec, rec.layers, [r.mean(dim=1) for r in reference])
    with record_attention(sdpa, "layers.1.*", rows=[1, 5]) as part:  # rows of a (B, 1, Nq, Nk) padding mask
        sdpa(ids, attention_mask=attention_mask)
    _assert_maps(part, part.layers, [reference[1][:, :, [1, 5]]])


def test_clip_vision_and_text_towers() -> None:
    eager, sdpa = _pair(
        transformers.CLIPModel, transformers.CLIPConfig,
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=50, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    ids, pixels = torch.randint(0, 50, (B, 5)), torch.randn(B, 3, 32, 32)
    reference = eager(input_ids=ids, pixel_values=pixels, output_attentions=True)
    with record_attention(sdpa) as rec:
        sdpa(input_ids=ids, pixel_values=pixels)
    text = [n for n in rec.layers if n.startswith("text_model")]
    vision = [n for n in rec.layers if n.startswith("vision_model")]
    _assert_maps(rec, text, reference.text_model_output.attentions)
    _assert_maps(rec, vision, reference.vision_model_output.attentions)
