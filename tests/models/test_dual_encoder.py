"""Tests of DualEncoder: shapes and unit norms, logits by hand, a training step reaching every parameter, the SigLIP
bias / fixed temperature, HF CLIPModel parity through from_pretrained, and the documented errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from vlblocks.data.tokenizer import build_word_tokenizer
from vlblocks.encoders import EncoderOutput, ImageEncoder, TextEncoder
from vlblocks.losses import contrastive_loss, siglip_loss
from vlblocks.models import DualEncoder, DualEncoderOutput

CAPTIONS = ["a red circle", "a blue square on the left", "two green triangles", "a big red square"]


def _tiny(**kwargs) -> DualEncoder:
    tokenizer = build_word_tokenizer(CAPTIONS)
    image = ImageEncoder.tiny("cnn", image_size=32, dim=32, patch_size=8)
    text = TextEncoder.tiny("bert", tokenizer=tokenizer, dim=32, depth=1, heads=2)
    return DualEncoder(image, text, embed_dim=16, **kwargs)


def _batch(model: DualEncoder, num_images: int = 4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return torch.randn(num_images, 3, 32, 32), model.tokenizer(CAPTIONS, padding=True, return_tensors="pt")


def test_shapes_unit_norms_and_logits_by_hand() -> None:
    model = _tiny()
    pixels, enc = _batch(model, num_images=3)
    out = model(pixels, enc["input_ids"], enc["attention_mask"])
    assert isinstance(out, DualEncoderOutput)
    assert out.logits_per_image.shape == (3, 4) and out.logits_per_text.shape == (4, 3)
    assert out.image_embeds.shape == (3, 16) and out.text_embeds.shape == (4, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(out.logit_scale, torch.tensor(1 / 0.07))
    torch.testing.assert_close(out.logits_per_image, out.logit_scale * out.image_embeds @ out.text_embeds.T)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert out.logit_bias is None
    torch.testing.assert_close(model.encode_image(pixels), out.image_embeds)
    # control: another image gives other logits
    assert not torch.allclose(model(pixels.flip(0), enc["input_ids"]).logits_per_image, out.logits_per_image)


def test_training_step_reaches_every_parameter() -> None:
    model = _tiny()
    pixels, enc = _batch(model)
    out = model(pixels, enc["input_ids"], enc["attention_mask"])
    contrastive_loss(out.image_embeds, out.text_embeds, out.logit_scale, normalize=False).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert "log_logit_scale" in dict(trainable)
    missing = [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_siglip_bias_and_fixed_temperature() -> None:
    model = _tiny(temperature=0.1, logit_bias=-10.0, learnable_temperature=False)
    assert [n for n, _ in model.named_parameters() if "logit" in n] == []
    assert {"log_logit_scale", "logit_bias"} <= set(model.state_dict())
    pixels, enc = _batch(model)
    out = model(pixels, enc["input_ids"], enc["attention_mask"])
    cosine = out.image_embeds @ out.text_embeds.T
    torch.testing.assert_close(out.logits_per_image, 10.0 * cosine - 10.0)
    loss = siglip_loss(out.image_embeds, out.text_embeds, out.logit_scale, out.logit_bias, normalize=False)
    assert torch.isfinite(loss)
    learnable = _tiny(logit_bias=-10.0)
    assert {"log_logit_scale", "logit_bias"} <= {n for n, _ in learnable.named_parameters()}


def test_from_pretrained_equals_hf_clip(tiny_clip_folder: Path) -> None:
    from transformers import CLIPModel

    hf = CLIPModel.from_pretrained(tiny_clip_folder).eval()
    model = DualEncoder.from_pretrained(tiny_clip_folder).eval()
    assert model.image_encoder.image_config.size == 32 and model.embed_dim == 16
    torch.testing.assert_close(model.logit_scale, torch.tensor(math.exp(2.0)))
    enc = model.tokenizer(
        ["a photo of a red circle", "a blue square", "no , no score ."], padding=True, return_tensors="pt"
    )
    pixels = torch.randn(2, 3, 32, 32)
    out = model(pixels, enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        ref = hf(pixel_values=pixels, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_embeds, ref.text_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits_per_image, ref.logits_per_image, atol=1e-5, rtol=1e-5)
    # every parameter (the moved post-LayerNorm included) is trainable and gets a gradient
    contrastive_loss(out.image_embeds[:2], out.text_embeds[:2], out.logit_scale, normalize=False).backward()
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    assert params["image_projection.0.weight"].grad.abs().sum() > 0


def test_errors(tmp_path: Path) -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="embed_dim must be a positive int"):
        DualEncoder(model.image_encoder, model.text_encoder, embed_dim=0)
    with pytest.raises(TypeError, match="image_encoder must be an nn.Module"):
        DualEncoder(lambda x: x, model.text_encoder, embed_dim=8)
    with pytest.raises(ValueError, match="image_encoder must have a positive int attribute `dim`"):
        DualEncoder(nn.Identity(), model.text_encoder, embed_dim=8)
    with pytest.raises(ValueError, match="temperature must be >= 1 / max_scale"):
        DualEncoder(model.image_encoder, model.text_encoder, embed_dim=8, temperature=0.001)

    class Bare(nn.Module):
        dim = 32

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :32]

    bad = DualEncoder(Bare(), model.text_encoder, embed_dim=8)
    with pytest.raises(TypeError, match="image_encoder must return an EncoderOutput"):
        bad.encode_image(torch.randn(2, 3, 32, 32))
    assert isinstance(model.image_encoder(torch.randn(1, 3, 32, 32)), EncoderOutput)

    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="must be a CLIP checkpoint"):
        DualEncoder.from_pretrained(tmp_path / "bert")
    with pytest.raises(FileNotFoundError):
        DualEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="trust_remote_code"):
        DualEncoder.from_pretrained(tmp_path / "bert", trust_remote_code=True)
