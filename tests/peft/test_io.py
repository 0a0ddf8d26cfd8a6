"""save_adapter / load_adapter: peft file layout, round trips (LoRA, adapters, soft prompts), every error."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from vlblocks.layers.attention import Attention
from vlblocks.peft import (
    BottleneckAdapter,
    LoRALayer,
    SoftPrompt,
    apply_adapters,
    apply_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    peft_state_dict,
    save_adapter,
)


class TinyNet(nn.Module):
    """Every supported layer type: Embedding, Attention (Linear), Conv2d, HF Conv1D."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.attn = Attention(16, heads=2)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.c1 = Conv1D(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids) + self.conv(img).flatten(2).mean(-1, keepdim=True).transpose(1, 2)  # (B, N, 16)
        return self.out(self.c1(self.attn(x)))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 50, (2, 6)), torch.randn(2, 3, 8, 8)


def _randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in peft_state_dict(model).items():
            if name.endswith(("lora_B", "up.weight")):
                p.normal_(std=0.1)


TARGETS = ["emb", "q", "v", "conv", "c1"]


def test_lora_round_trip_and_peft_layout(tmp_path) -> None:
    base = TinyNet().eval()
    model = copy.deepcopy(base)
    apply_lora(model, TARGETS, r=4, alpha=8, dropout=0.05)
    apply_lora(model, "out", r=2, alpha=3)  # a second rank: peft's rank_pattern / alpha_pattern
    _randomize(model)
    save_adapter(model, tmp_path, base_model_name_or_path="tiny")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] is None and config["bias"] == "none"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.05)
    assert config["target_modules"] == ["emb", "attn.q", "attn.v", "conv", "c1", "out"]
    assert config["rank_pattern"] == {"out": 2} and config["alpha_pattern"] == {"out": 3}
    assert config["fan_in_fan_out"] is True and config["use_rslora"] is False
    assert config["base_model_name_or_path"] == "tiny"
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert tensors["base_model.model.attn.q.lora_A.weight"].shape == (4, 16)
    assert tensors["base_model.model.emb.lora_embedding_A"].shape == (4, 50)
    assert tensors["base_model.model.conv.lora_B.weight"].shape == (16, 4, 1, 1)
    assert len(tensors) == 12

    fresh = copy.deepcopy(base)
    loaded = load_adapter(fresh, tmp_path)  # applies LoRA from the config first
    assert len(loaded) == 12 and fresh.out.r == 2 and fresh.out.lora_alpha == 3 and fresh.attn.q.r == 4
    assert fresh.emb.lora_dropout_p == 0.05
    ids, img = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids, img), model(ids, img), rtol=0, atol=0)
        assert not torch.allclose(fresh(ids, img), base(ids, img))
    wrapped = copy.deepcopy(base)
    apply_lora(wrapped, TARGETS, r=4, alpha=8)
    apply_lora(wrapped, "out", r=2, alpha=3)
    load_adapter(wrapped, tmp_path)  # already wrapped: only the weights load
    with torch.no_grad():
        torch.testing.assert_close(wrapped(ids, img), model(ids, img), rtol=0, atol=0)


def test_adapters_and_soft_prompt_round_trip(tmp_path) -> None:
    base = TinyNet().eval()
    model = copy.deepcopy(base)
    apply_adapters(model, ["attn.proj"], bottleneck=4, act="relu")
    apply_adapters(model, ["c1"], bottleneck=3)
    _randomize(model)
    save_adapter(model, tmp_path / "adapters")
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config == [
        {
            "peft_type": "VLBLOCKS_ADAPTER",
            "target_modules": ["attn.proj"],
            "bottleneck": 4,
            "act": "relu",
            "dropout": 0.0,
        },
        {
            "peft_type": "VLBLOCKS_ADAPTER",
            "target_modules": ["c1"],
            "bottleneck": 3,
            "act": "gelu",
            "dropout": 0.0,
        },
    ]
    keys = set(load_file(tmp_path / "adapters" / "adapter_model.safetensors"))
    assert "base_model.model.attn.proj.adapter.down.weight" in keys and len(keys) == 8
    fresh = copy.deepcopy(base)
    load_adapter(fresh, tmp_path / "adapters")
    assert isinstance(fresh.attn.proj.adapter, BottleneckAdapter) and isinstance(
        fresh.attn.proj.adapter.act, nn.ReLU
    )
    ids, img = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids, img), model(ids, img), rtol=0, atol=0)

    # LoRA + adapter + soft prompt in one file: a list of config entries
    apply_lora(model, ["q", "v"], r=2, alpha=4)
    model.prompt = SoftPrompt(3, 16)
    _randomize(model)
    save_adapter(model, tmp_path / "mixed")
    config = json.loads((tmp_path / "mixed" / "adapter_config.json").read_text())
    assert [e["peft_type"] for e in config] == [
        "LORA",
        "VLBLOCKS_ADAPTER",
        "VLBLOCKS_ADAPTER",
        "VLBLOCKS_MODULES",
    ]
    assert config[3]["modules"] == {"prompt": "SoftPrompt"}
    fresh = copy.deepcopy(base)
    with pytest.raises(
        ValueError, match="PEFT module 'prompt': expected a SoftPrompt in the model, found None"
    ):
        load_adapter(fresh, tmp_path / "mixed")
    fresh = copy.deepcopy(base)
    fresh.prompt = SoftPrompt(3, 16)
    load_adapter(fresh, tmp_path / "mixed")
    assert torch.equal(fresh.prompt.embedding, model.prompt.embedding)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids, img), model(ids, img), rtol=0, atol=0)


def test_shape_mismatch_names_module_expected_and_found(tmp_path) -> None:
    model = TinyNet()
    apply_lora(model, TARGETS, r=4, alpha=8)
    save_adapter(model, tmp_path)
    other = TinyNet()
    apply_lora(other, TARGETS, r=2, alpha=8)
    before = {k: v.clone() for k, v in peft_state_dict(other).items()}
    with pytest.raises(ValueError, match=r"attn\.q \(lora_A\): expected \(2, 16\), found \(4, 16\)"):
        load_adapter(other, tmp_path)
    for k, v in peft_state_dict(other).items():  # nothing was copied
        assert torch.equal(v, before[k])


def test_missing_unexpected_keys_and_bad_configs(tmp_path) -> None:
    model = TinyNet()
    apply_lora(model, ["q", "v"], r=2, alpha=4)
    save_adapter(model, tmp_path / "qv")
    more = TinyNet()
    apply_lora(more, ["q", "v", "k"], r=2, alpha=4)
    with pytest.raises(ValueError, match=r"missing keys \['attn\.k\.lora_A', 'attn\.k\.lora_B'\]"):
        load_adapter(more, tmp_path / "qv")
    tensors = load_file(tmp_path / "qv" / "adapter_model.safetensors")
    tensors["base_model.model.attn.zzz.lora_A.weight"] = torch.zeros(2, 16)
    save_file(tensors, tmp_path / "qv" / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys \['attn\.zzz\.lora_A'\]"):
        load_adapter(TinyNet(), tmp_path / "qv")

    config_path = tmp_path / "qv" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for key, value, message in [
        ("peft_type", "IA3", "unsupported peft_type 'IA3'"),
        ("use_dora", True, "use_dora=True"),
        ("modules_to_save", ["out"], "modules_to_save"),
        ("bias", "all", "bias='all'"),
        ("target_modules", ["nothing_here"], r"targets \['nothing_here'\]"),
    ]:
        config_path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=message):
            load_adapter(TinyNet(), tmp_path / "qv")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(TinyNet(), tmp_path / "empty")
    with pytest.raises(ValueError, match="no LoRA layers or PEFT modules to save"):
        save_adapter(TinyNet(), tmp_path / "nothing")


def test_merged_model_refuses_to_load(tmp_path) -> None:
    model = TinyNet()
    apply_lora(model, ["q"], r=2, alpha=4)
    save_adapter(model, tmp_path)
    merge_lora(model)
    with pytest.raises(ValueError, match=r"\['attn\.q'\] are merged; call unmerge_lora"):
        load_adapter(model, tmp_path)
    assert all(isinstance(layer, LoRALayer) for _, layer in lora_layers(model))
