"""RetrievalPreset / build_dual_encoder / GridPool: shapes, gradients, position sensitivity, JSON round trip, errors."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

from vlblocks.data import build_word_tokenizer
from vlblocks.encoders import ImageEncoder
from vlblocks.encoders.output import EncoderOutput
from vlblocks.models import DualEncoder, GridPool, RetrievalPreset, build_dual_encoder

TEXTS = ["one shape: a small red circle at the top left", "two shapes: a large blue square in the center"]


def tiny(**kw) -> RetrievalPreset:
    return RetrievalPreset(
        image_size=32, patch_size=8, dim=16, embed_dim=8, text_depth=1, max_length=16, **kw
    )


def test_build_gives_a_dual_encoder_whose_every_parameter_learns() -> None:
    tokenizer = build_word_tokenizer(TEXTS)
    model = build_dual_encoder(tiny(), tokenizer=tokenizer)
    assert isinstance(model, DualEncoder) and isinstance(model.image_encoder, GridPool)
    assert model.image_encoder.cells == 4  # the default 8 cells, capped at the 4 x 4 token grid of 32 px
    ids = tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = model(torch.randn(2, 3, 32, 32), ids["input_ids"], ids["attention_mask"])
    assert out.logits_per_image.shape == (2, 2) and out.image_embeds.shape == (2, 8)
    out.logits_per_image.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_text_tower_choice_gru_by_default_bert_on_request() -> None:
    from vlblocks.encoders import GRUTextEncoder, TextEncoder

    tokenizer = build_word_tokenizer(TEXTS)
    gru = build_dual_encoder(tiny(), tokenizer=tokenizer).text_encoder
    assert isinstance(gru, GRUTextEncoder) and gru.dim == 16 and gru.depth == 1
    bert = build_dual_encoder(tiny(text_encoder="tiny-bert"), tokenizer=tokenizer).text_encoder
    assert isinstance(bert, TextEncoder) and not isinstance(bert, GRUTextEncoder)
    with pytest.raises(ValueError, match="tokenizer is required for text_encoder='tiny-gru'"):
        build_dual_encoder(tiny())


class PixelTokens(nn.Module):
    """A stub image tower: every pixel is a token (its RGB), after a mean-pooled summary token."""

    dim, num_prefix_tokens, image_config = 3, 1, None

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        grid = rearrange(x, "b c h w -> b (h w) c")  # (B, H * W, 3)
        tokens = torch.cat([grid.mean(dim=1, keepdim=True), grid], dim=1)  # (B, 1 + H * W, 3)
        return EncoderOutput(tokens=tokens, mask=None, cls=tokens[:, 0])


def test_grid_pool_keeps_positions_that_the_mean_forgets() -> None:
    pool = GridPool(PixelTokens(), num_tokens=16, cells=2)
    left, right = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    left[0, 0, 0, 0] = right[0, 0, 0, 3] = 1.0  # one red pixel, top left vs top right
    assert torch.equal(PixelTokens()(left).cls, PixelTokens()(right).cls)  # the mean cannot tell them apart
    a, b = pool(left), pool(right)
    assert (a.cls - b.cls).abs().max() > 1e-3
    assert a.tokens.shape == (1, 17, 3) and torch.equal(a.tokens[:, 0], a.cls)
    # the cell averages are what the linear map sees: a pixel moved inside its cell changes nothing
    inside = torch.zeros(1, 3, 4, 4)
    inside[0, 0, 1, 1] = 1.0
    assert torch.allclose(pool(inside).cls, a.cls, atol=1e-6)


def test_preset_round_trips_through_a_dict_with_other_keys() -> None:
    preset = tiny(loss="siglip", temperature=0.1)
    assert RetrievalPreset.from_dict({**preset.to_dict(), "lr": 1e-3}) == preset
    model = build_dual_encoder(preset, tokenizer=build_word_tokenizer(TEXTS))
    assert model.logit_bias is not None and float(model.logit_bias.detach()) == -10.0
    assert float(model.logit_scale.detach()) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pool": "max"}, "pool"),
        ({"loss": "triplet"}, "loss"),
        ({"temperature": 0.0}, "temperature"),
        ({"embed_dim": 0}, "embed_dim"),
    ],
)
def test_bad_presets_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetrievalPreset(**kwargs)


def test_tiny_text_encoder_needs_a_tokenizer_and_grid_pool_checks_its_grid() -> None:
    with pytest.raises(ValueError, match="tokenizer is required"):
        build_dual_encoder(tiny())
    encoder = ImageEncoder.tiny("cnn", image_size=32, dim=16, patch_size=8)
    with pytest.raises(ValueError, match="num_tokens must be a square"):
        GridPool(encoder, num_tokens=15)
    with pytest.raises(ValueError, match="cells must be at most"):
        GridPool(encoder, num_tokens=16, cells=5)
    with pytest.raises(ValueError, match="grid tokens"):
        GridPool(encoder, num_tokens=16)(torch.randn(1, 3, 64, 64))
