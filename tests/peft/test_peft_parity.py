"""Parity with peft on the same weights: outputs, trainable counts, merged outputs, and adapter folders both ways."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from vlblocks.peft import (
    LoRAEmbedding,
    apply_lora,
    count_parameters,
    load_adapter,
    lora_layers,
    mark_only_peft_trainable,
    merge_lora,
    save_adapter,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class EmbedConv(nn.Module):
    """A small custom model with an Embedding and a strided, padded Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 16)
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.lin = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(img).mean(dim=(2, 3))  # (B, 16)
        return self.lin(self.emb(ids) + pooled[:, None])  # (B, N, 8)


def _gpt2():
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32))
    return model, ["c_attn", "c_proj", "c_fc"], {"input_ids": torch.randint(0, 100, (2, 8))}


def _bert():
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    return BertModel(config), ["query", "value"], {"input_ids": torch.randint(0, 100, (2, 8))}


def _vit():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    return model, ["qkv", "proj", "fc1", "fc2"], {"x": torch.randn(2, 3, 32, 32)}


def _embed_conv():
    inputs = {"ids": torch.randint(0, 30, (2, 5)), "img": torch.randn(2, 3, 8, 8)}
    return EmbedConv(), ["emb", "conv", "lin"], inputs


def _out(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def _peft_lora(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of a peft LoRA layer, in our layout."""
    if "default" in module.lora_embedding_A:
        return module.lora_embedding_A["default"], module.lora_embedding_B["default"]
    return module.lora_A["default"].weight, module.lora_B["default"].weight


def _pair(build):
    """(base, peft model, our model, inputs) with peft's random B copied into ours."""
    base, targets, inputs = build()
    base.eval()
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets)).eval()
    ours = copy.deepcopy(base)
    names = apply_lora(ours, targets, r=4, alpha=8)
    peft_layers = {n: m for n, m in theirs.base_model.model.named_modules() if hasattr(m, "lora_embedding_A")}
    assert sorted(peft_layers) == sorted(names)
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            a, b = _peft_lora(peft_layers[name])
            if isinstance(layer, LoRAEmbedding):
                a.normal_()  # peft starts embeddings with A = 0 and B random
            b.normal_(std=0.2)  # a non-zero B, so the LoRA branch matters
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
    return base, theirs, ours, inputs


BUILDERS = [_gpt2, _bert, _vit, _embed_conv]
IDS = ["gpt2", "bert", "timm_vit", "embedding_conv2d"]


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_outputs_counts_and_merge_match_peft(build) -> None:
    base, theirs, ours, inputs = _pair(build)
    expected = _out(theirs, inputs)
    assert not torch.allclose(expected, _out(base, inputs), atol=1e-3)
    torch.testing.assert_close(_out(ours, inputs), expected, rtol=1e-5, atol=1e-5)
    mark_only_peft_trainable(ours)
    trainable, total = theirs.get_nb_trainable_parameters()
    assert count_parameters(ours)[:2] == (trainable, total)
    merged_theirs = theirs.merge_and_unload()
    merge_lora(ours)
    torch.testing.assert_close(_out(ours, inputs), _out(merged_theirs, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_adapter_folders_load_both_ways(build, tmp_path) -> None:
    base, theirs, ours, inputs = _pair(build)
    expected = _out(theirs, inputs)
    save_adapter(ours, tmp_path / "ours")
    loaded_by_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours").eval()
    torch.testing.assert_close(_out(loaded_by_peft, inputs), expected, rtol=1e-5, atol=1e-5)
    theirs.save_pretrained(tmp_path / "theirs")
    fresh = copy.deepcopy(base)
    load_adapter(fresh, tmp_path / "theirs")
    torch.testing.assert_close(_out(fresh, inputs), expected, rtol=1e-5, atol=1e-5)
