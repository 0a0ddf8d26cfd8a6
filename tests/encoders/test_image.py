"""Tests of vlblocks.encoders.image and vlblocks.encoders.convnet: tiny presets, parity with HF / timm, errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import transformers as tf
from einops import rearrange
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

from vlblocks.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ConvNet,
    EncoderOutput,
    ImageConfig,
    ImageEncoder,
)
from vlblocks.encoders.convnet import sincos_2d

KINDS = ("cnn", "vit", "dinov2", "hf-vit", "clip")
HF_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def _trainable(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- level 1: shapes, grads


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_shapes_finite_and_gradients(kind: str) -> None:
    enc = ImageEncoder.tiny(kind, image_size=32, dim=32, patch_size=8)
    out = enc(torch.randn(2, 3, 32, 32))
    assert isinstance(out, EncoderOutput) and out.mask is None
    assert out.tokens.shape == (2, 1 + 16, 32) and enc.dim == 32 and enc.num_prefix_tokens == 1
    assert torch.isfinite(out.tokens).all()
    assert torch.equal(out.cls, out.tokens[:, 0])
    (out.tokens.square().mean() + out.cls.sum()).backward()
    names = _trainable(enc)
    assert names, "a fresh encoder must have trainable parameters"
    no_grad = [
        n
        for n, p in enc.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert no_grad == []


@pytest.mark.parametrize("kind", KINDS)
def test_freeze_unfreeze_and_eval_mode(kind: str) -> None:
    enc = ImageEncoder.tiny(kind, image_size=32, dim=32)
    before = set(_trainable(enc))
    assert enc.freeze() is enc and enc.frozen
    assert _trainable(enc) == []
    enc.train()  # a parent's .train() must not put a frozen model back in train mode
    assert enc.training and not any(m.training for m in enc.model.modules())
    assert enc.unfreeze() is enc and not enc.frozen
    assert set(_trainable(enc)) == before and all(m.training for m in enc.model.modules())


def test_unused_hf_parameters_stay_frozen() -> None:
    clip = ImageEncoder.tiny("clip", image_size=32, dim=32)
    frozen = {n for n, p in clip.named_parameters() if not p.requires_grad}
    assert frozen == {"model.post_layernorm.weight", "model.post_layernorm.bias"}
    dino = ImageEncoder.tiny("dinov2", image_size=32, dim=32).freeze().unfreeze()
    assert [n for n, p in dino.named_parameters() if not p.requires_grad] == ["model.embeddings.mask_token"]


def test_wrapping_keeps_the_callers_frozen_parameters() -> None:
    model = tf.Dinov2Model(tf.Dinov2Config(mlp_ratio=2, **HF_COMMON))
    model.embeddings.patch_embeddings.requires_grad_(False)
    enc = ImageEncoder(model)
    assert not any(p.requires_grad for p in enc.model.embeddings.patch_embeddings.parameters())
    assert enc.model.embeddings.cls_token.requires_grad and not enc.model.embeddings.mask_token.requires_grad


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_is_safetensors_round_trip(kind: str, tmp_path) -> None:
    torch.manual_seed(1)
    enc = ImageEncoder.tiny(kind, image_size=32, dim=32).eval()
    save_file(enc.state_dict(), tmp_path / "enc.safetensors")
    torch.manual_seed(2)
    other = ImageEncoder.tiny(kind, image_size=32, dim=32).eval()
    other.load_state_dict(load_file(tmp_path / "enc.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(x).tokens, enc(x).tokens, rtol=0, atol=0)


def test_tiny_image_configs() -> None:
    assert ImageEncoder.tiny("clip", image_size=32, dim=32).image_config == ImageConfig(
        32, CLIP_MEAN, CLIP_STD
    )
    assert ImageEncoder.tiny("hf-vit", image_size=32, dim=32).image_config.mean == (0.5, 0.5, 0.5)
    assert ImageEncoder.tiny("cnn").image_config == ImageConfig(64, IMAGENET_MEAN, IMAGENET_STD)


def test_hf_interpolates_position_embedding_for_other_sizes() -> None:
    for kind in ("hf-vit", "clip", "dinov2"):
        enc = ImageEncoder.tiny(kind, image_size=32, dim=32, patch_size=8)
        assert enc(torch.randn(1, 3, 48, 48)).tokens.shape == (1, 1 + 36, 32)


# ----------------------------------------------------------------------------- native CNN


def test_convnet_grid_and_prepended_mean_token() -> None:
    enc = ImageEncoder.tiny("cnn", image_size=64, dim=32).eval()
    assert isinstance(enc.model, ConvNet) and enc.model.grid_size == (8, 8)
    x = torch.randn(3, 3, 64, 64)
    out = enc(x)
    grid = enc.model(x)
    assert grid.shape == (3, 64, 32) and out.tokens.shape == (3, 65, 32)
    torch.testing.assert_close(out.tokens[:, 1:], grid, rtol=0, atol=0)
    torch.testing.assert_close(out.cls, grid.mean(dim=1), rtol=0, atol=1e-6)


def test_convnet_batched_equals_one_by_one_in_eval() -> None:
    net = ConvNet(dim=32, stages=2, image_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(net(x), single, rtol=1e-5, atol=1e-5)


def test_convnet_position_table_and_other_sizes() -> None:
    table = sincos_2d(8, 3, 5)  # quarter = 2 frequencies: 1 and 1/100
    ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    torch.testing.assert_close(table[0], ys.sin())
    torch.testing.assert_close(table[1], (ys / 100).sin())
    torch.testing.assert_close(table[2], ys.cos())
    torch.testing.assert_close(table[4], xs.sin())
    torch.testing.assert_close(table[7], (xs / 100).cos())
    net = ConvNet(dim=16, stages=2, image_size=32, norm="group", residual=False)
    torch.testing.assert_close(net.pos_embed[0], sincos_2d(16, 8, 8))
    assert net(torch.randn(2, 3, 48, 32)).shape == (2, 12 * 8, 16)  # position table interpolated to 12 x 8


def test_convnet_position_embedding_tells_left_from_right() -> None:
    """Cells whose receptive field stays inside a constant image see the same pixels: only the position table
    tells them apart (cells (3, 3) and (3, 4) of the 8 x 8 grid, 8 px apart)."""
    net = ConvNet(dim=32, stages=3).eval()
    x = torch.full((1, 3, 64, 64), 0.5)
    tokens = rearrange(net(x), "b (h w) d -> b h w d", h=8)  # (1, 8, 8, D)
    assert (tokens[0, 3, 3] - tokens[0, 3, 4]).abs().max() > 0.1
    with torch.no_grad():
        net.pos_embed.zero_()
    tokens = rearrange(net(x), "b (h w) d -> b h w d", h=8)
    torch.testing.assert_close(tokens[0, 3, 3], tokens[0, 3, 4], rtol=1e-5, atol=1e-5)
    assert (tokens[0, 3, 0] - tokens[0, 3, 3]).abs().max() > 1e-3  # border cells see the zero padding


# ----------------------------------------------------------------------------- level 4: parity with HF / timm


def _hf_vision(kind: str) -> tuple[torch.nn.Module, object, torch.nn.Module]:
    """(model to save, image processor, module whose last_hidden_state the encoder must reproduce)."""
    if kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(mlp_ratio=2, **HF_COMMON))
        proc = tf.BitImageProcessor(
            size={"shortest_edge": 40},
            crop_size={"height": 32, "width": 32},
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
        )
        return model, proc, model
    if kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(intermediate_size=64, **HF_COMMON))
        return model, tf.ViTImageProcessor(size={"height": 32, "width": 32}), model
    proc = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    if kind == "clip-vision":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(intermediate_size=64, **HF_COMMON))
        return model, proc, model
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=40
    )
    config = tf.CLIPConfig(
        text_config=text, vision_config=dict(intermediate_size=64, **HF_COMMON), projection_dim=16
    )
    model = tf.CLIPModel(config)
    return model, proc, model.vision_model


EXPECTED_STATS = {
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
    "vit": ((0.5,) * 3, (0.5,) * 3),
    "clip-vision": (CLIP_MEAN, CLIP_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
}


@pytest.mark.parametrize("kind", ["dinov2", "vit", "clip-vision", "clip"])
def test_hf_from_pretrained_matches_hf_model(kind: str, tmp_path) -> None:
    model, proc, reference = _hf_vision(kind)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    enc = ImageEncoder.from_pretrained(tmp_path).eval()
    assert enc.source == "hf" and enc.dim == 32 and enc.num_prefix_tokens == 1
    if kind.startswith("clip"):
        assert isinstance(enc.model, tf.CLIPVisionModel)
    mean, std = EXPECTED_STATS[kind]
    assert enc.image_config == ImageConfig(32, mean, std)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.eval()(pixel_values=x).last_hidden_state
        out = enc(x)
    torch.testing.assert_close(out.tokens, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.cls, expected[:, 0], rtol=0, atol=1e-6)


def test_hf_without_processor_uses_config_and_family_defaults(tmp_path) -> None:
    tf.Dinov2Model(tf.Dinov2Config(mlp_ratio=2, **HF_COMMON)).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no image processor"):
        enc = ImageEncoder.from_pretrained(tmp_path, image_size=48)
    assert enc.image_config == ImageConfig(48, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.warns(UserWarning, match="no image processor"):
        random = ImageEncoder.from_pretrained(str(tmp_path), pretrained=False)
    assert not torch.equal(random.model.embeddings.cls_token, enc.model.embeddings.cls_token)


def test_hf_checkpoint_missing_tower_weights_raises(tmp_path) -> None:
    tf.ViTModel(tf.ViTConfig(intermediate_size=64, **HF_COMMON)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="dinov2", architectures=["Dinov2Model"], mlp_ratio=2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not hold the weights of Dinov2Model"):
        ImageEncoder.from_pretrained(tmp_path)


def _tiny_timm_vit() -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
    )


def test_timm_vit_matches_forward_features() -> None:
    model = _tiny_timm_vit().eval()
    enc = ImageEncoder(model)
    assert enc.source == "timm" and enc.dim == 32 and enc.num_prefix_tokens == 1
    assert enc.image_config == ImageConfig(32, (0.5,) * 3, (0.5,) * 3)  # augreg ViT stats, the built size
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x).tokens, model.forward_features(x), rtol=0, atol=1e-6)


def test_timm_by_name_and_local_folder(tmp_path) -> None:
    enc = ImageEncoder.from_pretrained(
        "vit_tiny_patch16_224",
        pretrained=False,
        image_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )
    assert enc.source == "timm" and enc.image_config.size == 32 and enc.dim == 32
    assert enc(torch.randn(1, 3, 32, 32)).tokens.shape == (1, 17, 32)
    model = _tiny_timm_vit().eval()
    save_for_hf(model, str(tmp_path), safe_serialization=True)
    loaded = ImageEncoder.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).tokens, model.forward_features(x), rtol=0, atol=1e-6)


def test_timm_cnn_flattens_and_prepends_mean_token() -> None:
    enc = ImageEncoder.from_pretrained("test_resnet", pretrained=False, image_size=64).eval()
    assert enc.source == "timm" and enc.num_prefix_tokens == 1 and enc.image_config.size == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = enc.model.forward_features(x)  # (B, C, h, w)
        out = enc(x)
    grid = rearrange(feats, "b c h w -> b (h w) c")
    assert out.tokens.shape == (2, 1 + grid.shape[1], enc.dim) == (2, 5, 96)
    torch.testing.assert_close(out.tokens[:, 1:], grid, rtol=0, atol=0)
    torch.testing.assert_close(out.cls, grid.mean(dim=1), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- errors


def test_bad_pixel_values_raise() -> None:
    enc = ImageEncoder.tiny("cnn", image_size=32, dim=16)
    with pytest.raises(ValueError, match="3 channels"):
        enc(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="rank 4"):
        enc(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="float tensor"):
        enc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        enc([[0.0]])
    with pytest.raises(ValueError, match="3 channels"):
        ImageEncoder.tiny("dinov2", image_size=32, dim=32)(torch.randn(1, 4, 32, 32))


def test_bad_arguments_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ImageEncoder.tiny("resnet")
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ImageEncoder.tiny("vit", image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="power of 2"):
        ImageEncoder.tiny("cnn", image_size=36, patch_size=6)
    with pytest.raises(ValueError, match="divisible by heads"):
        ImageEncoder.tiny("vit", dim=30, heads=4)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        ImageEncoder.tiny("clip", dim=0)
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        ImageEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        ImageEncoder.from_pretrained("./no/such/model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ImageEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        ImageEncoder.from_pretrained("vit_tiny_patch16_224", trust_remote_code=True)
    with pytest.raises(TypeError, match="name_or_path"):
        ImageEncoder.from_pretrained(3)
    with pytest.raises(ValueError, match="image_size"):
        ImageEncoder.from_pretrained("vit_tiny_patch16_224", image_size=-1)
    with pytest.raises(TypeError, match="must be a timm model .* or a transformers PreTrainedModel"):
        ImageEncoder(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="vision model"):
        ImageEncoder(
            tf.BertModel(
                tf.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=10)
            )
        )
    with pytest.raises(ValueError, match="mean must have 3 values"):
        ImageConfig(32, (0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std must be positive"):
        ImageConfig(32, (0.5,) * 3, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="norm must be"):
        ConvNet(norm="layer")
    with pytest.raises(ValueError, match="divisible by 2\\*\\*stages"):
        ConvNet(image_size=60, stages=3)


def test_image_config_normalize_golden() -> None:
    cfg = ImageConfig(8, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(cfg.normalize(x)[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))


def test_any_module_with_timms_interface_is_wrapped_like_convnet() -> None:
    """ImageEncoder has no ConvNet special case: a look-alike module with timm's interface gets the same treatment."""

    class LookAlike(torch.nn.Module):
        num_features = 8
        num_prefix_tokens = 0
        has_class_token = False
        pretrained_cfg = {"input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).flatten(2).transpose(1, 2)  # (B, 16, 8)

    enc = ImageEncoder(LookAlike())
    assert enc.source == "native" and enc.dim == enc.out_dim == 8 and enc.num_prefix_tokens == 1
    assert enc.image_config == ImageConfig(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = enc(torch.randn(2, 3, 16, 16))
    assert out.tokens.shape == (2, 17, 8)
    torch.testing.assert_close(out.cls, out.tokens[:, 1:].mean(1))  # prepended mean summary, as for ConvNet
    net = ConvNet(dim=16, stages=2, image_size=32).eval()
    assert net.num_features == 16 and not net.has_class_token and net.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net.forward_features(x), net(x))
    wrapped = ImageEncoder(net)
    assert wrapped.image_config.size == 32 and wrapped.source == "native"
    from vlblocks.encoders import TextEncoder

    assert ImageEncoder.freeze is TextEncoder.freeze and ImageEncoder.unfreeze is TextEncoder.unfreeze  # one each
