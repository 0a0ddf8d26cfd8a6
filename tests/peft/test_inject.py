"""apply_lora on vlblocks / timm / HF models, all-linear, merge / remove, trainable marking and counting, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CLIPConfig,
    CLIPModel,
    Dinov2Config,
    Dinov2Model,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaModel,
)

from vlblocks.layers.attention import Attention
from vlblocks.peft import (
    BottleneckAdapter,
    LoRAConv2d,
    LoRALayer,
    LoRALinear,
    SoftPrompt,
    apply_adapters,
    apply_lora,
    count_parameters,
    lora_layers,
    mark_only_peft_trainable,
    merge_lora,
    peft_state_dict,
    remove_lora,
    unmerge_lora,
)


def _randomize_lora(model: nn.Module) -> None:
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_(std=0.1)


def _check_fresh_equals_base_and_update_is_active(
    base: nn.Module, targets, inputs: dict, n: int, **kw
) -> nn.Module:
    """LoRA model == base model at init, differs once B is random; returns the LoRA model."""
    base.eval()
    model = copy.deepcopy(base)
    names = apply_lora(model, targets, r=4, alpha=8, **kw)
    assert len(names) == n and all(isinstance(model.get_submodule(name), LoRALayer) for name in names)
    assert set(base.state_dict()) <= set(model.state_dict())  # base keys unchanged
    with torch.no_grad():
        ref, out = _first(base(**inputs)), _first(model(**inputs))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        _randomize_lora(model)
        assert not torch.allclose(_first(model(**inputs)), ref, atol=1e-4)
    return model


def _first(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if isinstance(out, tuple) else next(v for v in out.values() if isinstance(v, torch.Tensor))


def _vit(num_classes: int = 0) -> VisionTransformer:
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=num_classes
    )


def _gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32))


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def test_vlblocks_attention() -> None:
    attn = Attention(32, heads=2)
    x = torch.randn(2, 5, 32)
    _check_fresh_equals_base_and_update_is_active(attn, ["q", "v"], {"x": x}, 2)


def test_timm_vit() -> None:
    x = torch.randn(2, 3, 32, 32)
    model = _check_fresh_equals_base_and_update_is_active(_vit(), ["qkv", "proj", "fc1", "fc2"], {"x": x}, 9)
    assert isinstance(model.patch_embed.proj, LoRAConv2d)  # "proj" also matches the patch embedding conv


def test_hf_roberta_dinov2_clip() -> None:
    ids = torch.randint(0, 100, (2, 7))
    roberta = RobertaModel(RobertaConfig(vocab_size=100, max_position_embeddings=40, **TINY))
    _check_fresh_equals_base_and_update_is_active(roberta, ["query", "value"], {"input_ids": ids}, 4)
    dino = Dinov2Model(Dinov2Config(image_size=32, patch_size=8, **TINY))
    pixels = torch.randn(2, 3, 32, 32)
    _check_fresh_equals_base_and_update_is_active(dino, ["q_proj", "v_proj"], {"pixel_values": pixels}, 4)
    sub = {**TINY, "projection_dim": 16}
    clip = CLIPModel(
        CLIPConfig(
            text_config={**sub, "vocab_size": 100, "max_position_embeddings": 16},
            vision_config={**sub, "image_size": 32, "patch_size": 8},
            projection_dim=16,
        )
    )
    inputs = {"input_ids": ids, "pixel_values": pixels}
    model = _check_fresh_equals_base_and_update_is_active(clip, ["q_proj", "v_proj"], inputs, 8)
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits_per_image).all()


def test_all_linear_excludes_output_heads_like_peft() -> None:
    from peft import LoraConfig, get_peft_model

    gpt2 = _gpt2()
    names = apply_lora(copy.deepcopy(gpt2), "all-linear", dry_run=True)
    peft_model = get_peft_model(copy.deepcopy(gpt2), LoraConfig(r=4, target_modules="all-linear"))
    assert set(names) == set(peft_model.peft_config["default"].target_modules)
    assert "lm_head" not in names and len(names) == 8
    bert = BertForSequenceClassification(BertConfig(vocab_size=100, num_labels=3, **TINY))
    names = apply_lora(bert, "all-linear", dry_run=True)
    assert "classifier" not in names and "bert.pooler.dense" in names and len(names) == 13
    vit = _vit(num_classes=5)
    names = apply_lora(vit, ["all-linear"], dry_run=True)
    assert "head" not in names and len(names) == 8 and "patch_embed.proj" not in names


def test_all_linear_skips_adapter_internals_and_multihead_attention() -> None:
    vit = _vit()
    apply_adapters(vit, ["attn.proj"], bottleneck=4)
    names = apply_lora(vit, "all-linear", dry_run=True)
    assert len(names) == 8 and not any(".adapter." in n for n in names)
    mha = nn.Sequential(nn.MultiheadAttention(16, 2), nn.Linear(16, 16))
    assert apply_lora(mha, "all-linear", dry_run=True) == ["1"]


def test_dry_run_exclude_and_shared_layers() -> None:
    attn = Attention(16, heads=2)
    before = copy.deepcopy(attn.state_dict())
    assert apply_lora(attn, ["q", "k", "v"], exclude="k", dry_run=True) == ["q", "v"]
    assert not any(isinstance(m, LoRALayer) for m in attn.modules())
    assert attn.state_dict().keys() == before.keys()
    shared = nn.Linear(4, 4)
    model = nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.Sequential(shared)})
    apply_lora(model, r".*\.0")
    assert isinstance(model["a"][0], LoRALinear) and model["a"][0] is model["b"][0]


def test_apply_lora_errors() -> None:
    attn = Attention(16, heads=2)
    with pytest.raises(ValueError, match=r"targets \['nope', 'xyz'\].*matched no"):
        apply_lora(attn, ["nope", "xyz"])
    with pytest.raises(ValueError, match="matched only unsupported modules"):
        apply_lora(attn, "attn_probs")
    with pytest.raises(ValueError, match="^r must be a positive int, got 0"):
        apply_lora(attn, "q", r=0)
    with pytest.raises(ValueError, match="^alpha must"):
        apply_lora(attn, "q", alpha=-2)
    with pytest.raises(ValueError, match="^dropout must"):
        apply_lora(attn, "q", dropout=1.5)
    apply_lora(attn, "q")
    with pytest.raises(ValueError, match=r"already LoRA-wrapped: \['q'\]"):
        apply_lora(attn, ["q", "v"])
    assert not isinstance(attn.v, LoRALayer)  # nothing changed by the failed call


def test_merge_unmerge_remove_on_a_model() -> None:
    base = _vit().eval()
    model = copy.deepcopy(base)
    apply_lora(model, ["qkv", "fc2"], r=4, alpha=8)
    _randomize_lora(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        assert len(merge_lora(model)) == 4
        torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
        unmerge_lora(model)
        for k, v in model.state_dict().items():
            assert (v - weights[k]).norm() <= 1e-6 * max(weights[k].norm(), 1e-12), k
        remove_lora(model, merge=True)
        assert not any(isinstance(m, LoRALayer) for m in model.modules())
        assert model.state_dict().keys() == base.state_dict().keys()
        torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
        restored = copy.deepcopy(base)
        apply_lora(restored, "qkv")
        _randomize_lora(restored)
        remove_lora(restored, merge=False)
        torch.testing.assert_close(restored(x), base(x), rtol=0, atol=0)


def test_only_peft_parameters_train() -> None:
    vit = _vit(num_classes=3)
    apply_lora(vit, ["qkv"], r=4, alpha=8)
    apply_adapters(vit, ["mlp.fc2"], bottleneck=4)
    vit.prompt = SoftPrompt(2, 32)
    mark_only_peft_trainable(vit, extra="head")
    _randomize_lora(vit)
    with torch.no_grad():
        for m in vit.modules():
            if isinstance(m, BottleneckAdapter):
                m.up.weight.normal_()
    out = vit(torch.randn(2, 3, 32, 32)).sum() + vit.prompt.embedding.sum()
    out.backward()
    peft = set(peft_state_dict(vit))
    assert {"blocks.0.attn.qkv.lora_A", "blocks.1.mlp.fc2.adapter.up.bias", "prompt.embedding"} <= peft
    assert len(peft) == 2 * 2 + 2 * 4 + 1
    for name, p in vit.named_parameters():
        trainable = name in peft or name.startswith("head.")
        assert p.requires_grad == trainable, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) == trainable, name
    count = count_parameters(vit)
    expected = sum(p.numel() for p in vit.parameters() if p.requires_grad)
    assert count.trainable == expected and count.total == sum(p.numel() for p in vit.parameters())
    assert count.percent == pytest.approx(100 * expected / count.total)


def test_count_parameters_counts_tied_weights_once() -> None:
    gpt2 = _gpt2()
    count = count_parameters(gpt2)
    assert count.total == gpt2.num_parameters() and count.trainable == count.total and count.percent == 100.0
