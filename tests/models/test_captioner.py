"""Captioner: HF ViT-GPT-2 (VisionEncoderDecoderModel) parity of logits, greedy and beam captions; errors."""

from __future__ import annotations

import pytest
import torch

from vlblocks.data.tokenizer import build_word_tokenizer
from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.encoders import ImageEncoder
from vlblocks.models.captioner import Captioner

transformers = pytest.importorskip("transformers")

WORDS = "a red blue green small big circle square triangle left right of the above below".split()


@pytest.fixture(scope="module")
def ved(tmp_path_factory):
    torch.manual_seed(5)
    tok = build_word_tokenizer([" ".join(WORDS)])
    vocab = len(tok)
    vit = transformers.ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                                 image_size=16, patch_size=8)
    gpt = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id)
    cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vit, gpt)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = tok.bos_token_id, tok.pad_token_id, tok.eos_token_id
    hf = transformers.VisionEncoderDecoderModel(cfg).eval()
    with torch.no_grad():  # eos likely, so captions end at different lengths
        hf.decoder.transformer.wte.weight[tok.eos_token_id] *= 2.5
        hf.decoder.transformer.wte.weight[[0, 1, 2, 3, 6]] = 0.0  # special tokens other than bos / eos: unlikely
        for block in hf.decoder.transformer.h:  # a strong image signal, so captions differ between images
            block.crossattention.c_proj.weight *= 40.0
    folder = tmp_path_factory.mktemp("vit-gpt2")
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return hf, folder, tok


def _hf_captions(hf, tok, pixels, **kw):
    cfg = transformers.GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, decoder_start_token_id=tok.bos_token_id, **kw)
    with torch.no_grad():
        ids = hf.generate(pixels, generation_config=cfg)
    return ids, [t.strip() for t in tok.batch_decode(ids[:, 1:], skip_special_tokens=True)]


def _pad_after_eos(ids, tok):
    """HF's beam search fills after eos with eos when pad_token_id is 0 (`pad or eos`); vlblocks uses pad."""
    after = ((ids == tok.eos_token_id).cumsum(1) - (ids == tok.eos_token_id).long()) > 0
    return ids.masked_fill(after, tok.pad_token_id)


def test_logits_and_captions_equal_hf(ved):
    hf, folder, tok = ved
    model = Captioner.from_pretrained(folder).eval()
    assert isinstance(model.projector, torch.nn.Linear)  # ViT width 24 -> GPT-2 width 32
    pixels = torch.randn(3, 3, 16, 16)
    ids = torch.randint(7, len(tok), (3, 5))
    ids[:, 0] = tok.bos_token_id
    with torch.no_grad():
        expected = hf(pixel_values=pixels, decoder_input_ids=ids).logits
        torch.testing.assert_close(model(pixels, ids).logits, expected, atol=1e-5, rtol=1e-5)
    kw = dict(max_new_tokens=8, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for beam in (dict(), dict(num_beams=3, length_penalty=1.0, early_stopping=True)):
        hf_ids, hf_text = _hf_captions(hf, tok, pixels, **beam)
        ours_ids = model.generate_ids(pixels, **kw, **beam).sequences
        assert torch.equal(ours_ids[:, : hf_ids.shape[1]], _pad_after_eos(hf_ids, tok))
        assert model.generate(pixels, **kw, **beam) == hf_text
        assert len({tuple(r) for r in hf_ids.tolist()}) > 1  # control: the images change the tokens
    assert any(hf_text)


def test_training_forward_gradients_and_errors():
    enc = ImageEncoder.tiny("vit", image_size=16, dim=24, depth=1, heads=2, patch_size=8)
    dec = GPT2Decoder(GPT2DecoderConfig(vocab_size=30, n_positions=16, n_embd=32, n_layer=1, n_head=4,
                                        cross_attention=True, bos_token_id=1, eos_token_id=2))
    model = Captioner(enc, dec, projector=torch.nn.Linear(24, 32))
    ids = torch.randint(3, 30, (2, 6))
    out = model(torch.randn(2, 3, 16, 16), ids, labels=ids)
    out.loss.backward()
    assert dec.transformer.h[0].crossattention.c_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a tokenizer"):
        model.generate(torch.randn(1, 3, 16, 16), max_new_tokens=2)
    assert model.generate_ids(torch.randn(1, 3, 16, 16), max_new_tokens=2).sequences.shape == (1, 3)
    plain = GPT2Decoder(GPT2DecoderConfig(vocab_size=30, n_positions=16, n_embd=32, n_layer=1, n_head=4))
    with pytest.raises(ValueError, match="decoder must read image tokens"):
        Captioner(enc, plain)
    with pytest.raises(ValueError, match=r"image_embeds must have shape \(B, Ni, 32\)"):
        Captioner(enc, dec)(torch.randn(2, 3, 16, 16), ids)
