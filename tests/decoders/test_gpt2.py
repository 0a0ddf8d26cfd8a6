"""GPT2Decoder: HF parity (GPT2LMHeadModel, GPT-2 with cross-attention, ViT-GPT-2), zero-init cross-attention,
prefix mode, loss, loading errors."""

from __future__ import annotations

import pytest
import torch

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.decoders.gpt2 import IGNORE_INDEX

transformers = pytest.importorskip("transformers")

V, D = 61, 32


def _hf_config(**kw):
    base = dict(vocab_size=V, n_positions=40, n_embd=D, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return transformers.GPT2Config(**base)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(_hf_config()).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def hf_cross(tmp_path_factory):
    torch.manual_seed(2)
    model = transformers.GPT2LMHeadModel(_hf_config(add_cross_attention=True)).eval()
    folder = tmp_path_factory.mktemp("gpt2x")
    model.save_pretrained(folder)
    return model, folder


def test_logits_match_hf_gpt2(hf_gpt2):
    hf, folder = hf_gpt2
    ours = GPT2Decoder.from_pretrained(folder).eval()
    ids = torch.randint(0, V, (3, 9))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids).logits
    assert got.shape == (3, 9, V)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # HF's Conv1D (in, out) became nn.Linear (out, in)
    w = hf.transformer.h[0].attn.c_attn.weight
    assert isinstance(ours.transformer.h[0].attn.c_attn, torch.nn.Linear)
    torch.testing.assert_close(ours.transformer.h[0].attn.c_attn.weight, w.t())
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_loss_matches_hf(hf_gpt2):
    hf, folder = hf_gpt2
    ours = GPT2Decoder.from_pretrained(folder).eval()
    ids = torch.randint(0, V, (2, 7))
    labels = ids.clone()
    labels[0, 4:] = IGNORE_INDEX
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, labels=labels).loss, hf(ids, labels=labels).loss, atol=1e-5, rtol=1e-5)


def test_logits_match_hf_cross_attention(hf_cross):
    hf, folder = hf_cross
    ours = GPT2Decoder.from_pretrained(folder).eval()
    assert ours.config.cross_attention
    ids, image = torch.randint(0, V, (2, 6)), torch.randn(2, 5, D)
    with torch.no_grad():
        expected = hf(ids, encoder_hidden_states=image).logits
        got = ours(ids, image).logits
        other = ours(ids, torch.randn(2, 5, D)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other, expected, atol=1e-3)  # control: the image matters


def test_zero_init_cross_attention_keeps_pretrained_logits(hf_gpt2):
    hf, folder = hf_gpt2
    ours = GPT2Decoder.from_pretrained(folder, cross_attention=True).eval()
    ids, image = torch.randint(0, V, (2, 6)), torch.randn(2, 5, D)
    with torch.no_grad():
        expected = hf(ids).logits
        torch.testing.assert_close(ours(ids, image).logits, expected, atol=1e-5, rtol=1e-5)
        # control: once the output projection is non-zero, the image changes the logits
        torch.nn.init.normal_(ours.transformer.h[0].crossattention.c_proj.weight, std=0.5)
        assert not torch.allclose(ours(ids, image).logits, expected, atol=1e-3)
    # HF's own way adds random cross weights that perturb the LM at step 0
    hf_x = transformers.GPT2LMHeadModel.from_pretrained(folder, add_cross_attention=True).eval()
    with torch.no_grad():
        assert not torch.allclose(hf_x(ids, encoder_hidden_states=image).logits, expected, atol=1e-3)


def test_padding_mask_matches_unpadded_rows(hf_gpt2):
    ours = GPT2Decoder.from_pretrained(hf_gpt2[1]).eval()
    a = torch.randint(3, V, (1, 4))
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), a], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        alone = ours(a).logits
        both = ours(padded, attention_mask=mask).logits[:, 2:]
        unmasked = ours(padded).logits[:, 2:]
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_vision_encoder_decoder_checkpoint_decoder_part(tmp_path):
    vit = transformers.ViTConfig(
        hidden_size=D, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8
    )
    cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, _hf_config())
    hf = transformers.VisionEncoderDecoderModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = GPT2Decoder.from_pretrained(tmp_path).eval()
    ids, image = torch.randint(0, V, (2, 5)), torch.randn(2, 5, D)
    with torch.no_grad():
        expected = hf.decoder(ids, encoder_hidden_states=image).logits
        torch.testing.assert_close(ours(ids, image).logits, expected, atol=1e-5, rtol=1e-5)


def test_prefix_mode_shapes_loss_gradients_and_scale():
    cfg = GPT2DecoderConfig(vocab_size=V, n_positions=32, n_embd=D, n_layer=2, n_head=4, mode="prefix", dim_image=24)
    model = GPT2Decoder(cfg)
    ids, image = torch.randint(0, V, (2, 6)), torch.randn(2, 5, 24) * 50
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0
    out = model(ids, image, attention_mask=mask, labels=ids)
    assert out.logits.shape == (2, 6, V) and torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the visual tokens come out at the text embeddings' scale, whatever the input scale
    pre = model.prefix_embeds(image)
    text_std = model.transformer.wte.weight.std()
    assert 0.5 < (pre.std() / text_std).item() < 2.0
    # the image changes the text logits (control)
    with torch.no_grad():
        assert not torch.allclose(model(ids, image).logits, model(ids, image.flip(0)).logits)


def test_cross_mode_gradients_reach_every_parameter():
    cfg = GPT2DecoderConfig(vocab_size=V, n_positions=32, n_embd=D, n_layer=2, n_head=4, cross_attention=True)
    model = GPT2Decoder(cfg)
    for block in model.transformer.h:
        torch.nn.init.normal_(block.crossattention.c_proj.weight, std=0.02)
    ids = torch.randint(0, V, (2, 6))
    model(ids, torch.randn(2, 3, D), labels=ids).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_errors(tmp_path, hf_gpt2):
    cfg = GPT2DecoderConfig(vocab_size=V, n_positions=8, n_embd=D, n_layer=1, n_head=4, cross_attention=True)
    model = GPT2Decoder(cfg)
    ids = torch.randint(0, V, (2, 4))
    with pytest.raises(ValueError, match=r"image_embeds must have shape \(B, Ni, 32\)"):
        model(ids, torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="image_embeds .* is required"):
        model(ids)
    with pytest.raises(ValueError, match="n_positions=8"):
        model(torch.randint(0, V, (1, 9)), torch.randn(1, 3, D))
    with pytest.raises(ValueError, match="mode must be one of"):
        GPT2DecoderConfig(mode="concat")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="never unpickles"):
        GPT2Decoder.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        GPT2Decoder.from_pretrained(tmp_path / "missing")
