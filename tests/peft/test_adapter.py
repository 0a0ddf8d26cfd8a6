"""Bottleneck adapters: exact identity when fresh on timm ViT / HF BERT / HF GPT-2, training moves only adapters,
base keys unchanged, save/load and removal round trips, deep copy, fullgraph compile, and every error."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

from vlblocks.peft.adapter import BottleneckAdapter, apply_adapters, remove_adapters
from vlblocks.peft.inject import apply_lora, mark_only_peft_trainable
from vlblocks.peft.io import load_adapter, save_adapter

DEPTH = 2


def _vit() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[str]]:
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2, num_classes=0
    )
    images = torch.randn(2, 3, 32, 32)
    return model.eval(), lambda m: m(images), ["attn.proj", "mlp.fc2"]


def _bert() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[str]]:
    config = BertConfig(
        hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    ids = torch.randint(0, 100, (2, 7))
    targets = ["attention.output.dense", r".*layer\.\d+\.output\.dense"]
    return BertModel(config).eval(), lambda m: m(input_ids=ids).last_hidden_state, targets


def _gpt2() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], list[str]]:
    config = GPT2Config(n_embd=32, n_layer=DEPTH, n_head=2, vocab_size=100, n_positions=32)
    ids = torch.randint(0, 100, (2, 7))
    return (
        GPT2Model(config).eval(),
        lambda m: m(input_ids=ids).last_hidden_state,
        ["attn.c_proj", "mlp.c_proj"],
    )


FAMILIES = {"timm_vit": _vit, "hf_bert": _bert, "hf_gpt2": _gpt2}


def _adapter_keys(names: list[str]) -> set[str]:
    return {f"{n}.adapter.{layer}.{p}" for n in names for layer in ("down", "up") for p in ("weight", "bias")}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapters_on_real_models(family: str, tmp_path: Path) -> None:
    model, run, targets = FAMILIES[family]()
    base = copy.deepcopy(model)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        ref = run(base)

    names = apply_adapters(model, targets, bottleneck=4)
    assert len(names) == 2 * DEPTH  # Houlsby: after attention output and after MLP output of every block
    with torch.no_grad():
        assert torch.equal(run(model), ref)  # a fresh adapter is exactly the identity
    keys = set(model.state_dict())
    assert {k for k in keys if ".adapter." not in k} == set(base_state)
    assert keys - set(base_state) == _adapter_keys(names)

    mark_only_peft_trainable(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == _adapter_keys(names)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = torch.randn_like(ref)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(run(model), target).backward()
        opt.step()
    for name, p in model.named_parameters():
        if name in _adapter_keys(names):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    with torch.no_grad():
        trained = run(model)
    assert not torch.allclose(trained, ref, atol=1e-4)
    for k, v in model.state_dict().items():
        if k in base_state:
            assert torch.equal(v, base_state[k]), k  # the base never moves

    save_adapter(model, tmp_path)
    fresh = copy.deepcopy(base)
    apply_adapters(fresh, targets, bottleneck=4)
    load_adapter(fresh, tmp_path)
    bare = copy.deepcopy(base)
    load_adapter(bare, tmp_path)  # without adapters yet: the config re-applies them
    with torch.no_grad():
        assert torch.equal(run(fresh), trained)
        assert torch.equal(run(bare), trained)

    assert remove_adapters(model) == names
    assert set(model.state_dict()) == set(base_state)
    assert not any(isinstance(m, BottleneckAdapter) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(run(model), ref)
    assert remove_adapters(model) == []


def test_adapter_formula_and_identity() -> None:
    adapter = BottleneckAdapter(16, bottleneck=4, act="relu")
    x = torch.randn(2, 3, 5, 16)
    assert torch.equal(adapter(x), x)
    assert adapter.up.weight.abs().sum() == 0 and adapter.up.bias.abs().sum() == 0
    assert adapter.down.weight.shape == (4, 16) and adapter.up.weight.shape == (16, 4)
    assert isinstance(adapter.act, nn.ReLU) and isinstance(adapter.drop, nn.Dropout)
    with torch.no_grad():
        adapter.up.weight.normal_()
        adapter.up.bias.normal_()
    w1, b1, w2, b2 = adapter.down.weight, adapter.down.bias, adapter.up.weight, adapter.up.bias
    expected = x + torch.relu(x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(adapter(x), expected)
    assert BottleneckAdapter.is_peft_module is True


def test_houlsby_patterns_per_family() -> None:
    bert, _, targets = _bert()
    attn = [f"encoder.layer.{i}.attention.output.dense" for i in range(DEPTH)]
    ffn = [f"encoder.layer.{i}.output.dense" for i in range(DEPTH)]
    assert apply_adapters(bert, "attention.output.dense", bottleneck=4, dry_run=True) == attn
    assert apply_adapters(bert, r".*layer\.\d+\.output\.dense", bottleneck=4, dry_run=True) == ffn
    both = [n for pair in zip(attn, ffn) for n in pair]
    assert apply_adapters(bert, targets, bottleneck=4, dry_run=True) == both
    assert (
        apply_adapters(bert, "output.dense", bottleneck=4, dry_run=True) == both
    )  # suffix matches both kinds
    dense = apply_adapters(
        bert, "dense", bottleneck=4, dry_run=True
    )  # too broad: intermediate and pooler too
    assert "encoder.layer.0.intermediate.dense" in dense and "pooler.dense" in dense
    assert not any(isinstance(m, BottleneckAdapter) for m in bert.modules())  # dry runs change nothing

    gpt2, _, _ = _gpt2()
    assert apply_adapters(gpt2, "c_proj", bottleneck=4, dry_run=True) == [
        f"h.{i}.{kind}.c_proj" for i in range(DEPTH) for kind in ("attn", "mlp")
    ]
    lora_gpt2, _, _ = _gpt2()
    apply_lora(lora_gpt2, "mlp.c_proj", r=2)  # adapters stack on LoRA-wrapped layers (LoRALinear, LoRAConv1D)
    assert len(apply_adapters(lora_gpt2, "c_proj", bottleneck=4)) == 2 * DEPTH
    assert lora_gpt2.h[0].mlp.c_proj.adapter.dim == 32

    vit, _, _ = _vit()
    with pytest.raises(
        ValueError, match="patch_embed.proj"
    ):  # "proj" alone also selects the Conv2d patch embedding
        apply_adapters(vit, "proj", bottleneck=4)
    assert apply_adapters(vit, ["attn.proj", "mlp.fc2"], bottleneck=4, exclude=r"blocks\.0\..*") == [
        "blocks.1.attn.proj",
        "blocks.1.mlp.fc2",
    ]


class _TupleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(x), x.sum()


def test_tuple_output_dim_override_and_dtype() -> None:
    model = nn.Sequential(_TupleLayer())
    with pytest.raises(ValueError, match="pass dim="):
        apply_adapters(model, "0", bottleneck=2)
    assert apply_adapters(model, "0", bottleneck=2, dim=8) == ["0"]
    adapter = model[0].adapter
    with torch.no_grad():
        adapter.up.bias.fill_(1.0)
    x = torch.randn(3, 8)
    out, total = model(x)
    torch.testing.assert_close(out, nn.functional.layer_norm(x, (8,)) + 1.0)
    assert torch.equal(total, x.sum())  # other tuple elements pass through

    double = nn.Sequential(nn.Linear(8, 6).double())
    apply_adapters(double, "0", bottleneck=2)
    assert double[0].adapter.down.weight.dtype == torch.float64
    assert double(torch.randn(2, 8, dtype=torch.float64)).shape == (2, 6)


def test_deepcopy_is_independent() -> None:
    model, run, targets = _vit()
    apply_adapters(model, targets, bottleneck=4)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        ref = run(model)
        clone.blocks[0].attn.proj.adapter.up.bias.fill_(1.0)
        assert torch.equal(run(model), ref)  # the copy's hook uses the copy's adapter
        assert not torch.allclose(run(clone), ref)
    assert len(remove_adapters(clone)) == 2 * DEPTH
    with torch.no_grad():
        assert torch.equal(run(model), ref)  # removing from the copy leaves the original hooked


def test_fullgraph_compile_of_adapted_block() -> None:
    block = Block(dim=32, num_heads=2).eval()
    apply_adapters(block, ["attn.proj", "mlp.fc2"], bottleneck=4)
    with torch.no_grad():
        for p in block.parameters():
            if p.ndim == 1:
                p.normal_()
    x = torch.randn(2, 5, 32)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), block(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0, "bottleneck": 4}, "dim must be a positive int"),
        ({"dim": 8, "bottleneck": 0}, "bottleneck must be a positive int, got 0"),
        ({"dim": 8, "bottleneck": -3}, "bottleneck must be a positive int"),
        ({"dim": 8, "bottleneck": 2.5}, "bottleneck must be a positive int"),
        ({"dim": 8, "bottleneck": True}, "bottleneck must be a positive int"),
        ({"dim": 8, "bottleneck": 4, "dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"dim": 8, "bottleneck": 4, "dropout": -0.1}, "dropout must be"),
        ({"dim": 8, "bottleneck": 4, "act": "nope"}, "act must be one of"),
    ],
)
def test_adapter_constructor_errors(kwargs: dict, match: str) -> None:
    dim = kwargs.pop("dim")
    with pytest.raises(ValueError, match=match):
        BottleneckAdapter(dim, **kwargs)


def test_apply_adapters_errors() -> None:
    model, _, targets = _vit()
    with pytest.raises(ValueError, match=r"targets \['nothing', 'here'\].*matched no module"):
        apply_adapters(model, ["nothing", "here"], bottleneck=4)
    with pytest.raises(ValueError, match="bottleneck must be a positive int"):
        apply_adapters(model, targets, bottleneck=0)
    with pytest.raises(ValueError, match="dim must be a positive int, got -1"):
        apply_adapters(model, targets, bottleneck=4, dim=-1)
    assert not any(isinstance(m, BottleneckAdapter) for m in model.modules())  # failures change nothing
    apply_adapters(model, targets, bottleneck=4)
    with pytest.raises(ValueError, match="'blocks.0.attn.proj' already has .*adapter"):
        apply_adapters(model, "attn.proj", bottleneck=4)
    with pytest.raises(ValueError, match="matched no module"):  # adapters' own layers are never targets
        apply_adapters(model, r".*adapter\.(up|down)", bottleneck=4)
