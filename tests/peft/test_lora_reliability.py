"""LoRA regressions from the reliability review (issue 7 items 4, 7, 10): merged checkpoints, tied weights,
alpha / dropout edge values, float64 merges, and the lazily built `LoRAConv1D`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlblocks.layers import Attention
from vlblocks.peft import LoRALinear, apply_lora, merge_lora, remove_lora, unmerge_lora
from vlblocks.peft.lora import LoRADropout
from vlblocks.training import load_checkpoint, save_checkpoint


def _trained(seed: int = 0) -> nn.Module:
    """A small attention model with LoRA on q and v whose update is far from zero."""
    torch.manual_seed(seed)
    model = Attention(16, heads=2).eval()
    apply_lora(model, ["q", "v"], r=4, alpha=8)
    with torch.no_grad():
        for layer in (model.q, model.v):
            layer.lora_B.normal_(std=2.0)
    return model


def _fresh() -> nn.Module:
    model = _trained(seed=1)  # other base weights and LoRA factors: loading must overwrite all of them
    return model


# ----- item 4: a checkpoint saved while merged ------------------------------------------------------------------


def test_state_dict_of_a_merged_model_loads_into_an_unmerged_one() -> None:
    model = _trained()
    x = torch.randn(2, 5, 16)
    expected = model(x)
    unmerged_state = {k: v.clone() for k, v in model.state_dict().items()}
    merge_lora(model)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    merged_state = model.state_dict()
    # the saved weight is always the unmerged base weight: the same file whatever the merge state
    for key, value in unmerged_state.items():
        torch.testing.assert_close(merged_state[key], value, atol=1e-6, rtol=1e-6)
    fresh = _fresh()
    fresh.load_state_dict(merged_state)
    torch.testing.assert_close(fresh(x), expected, atol=1e-5, rtol=1e-5)  # not the update applied twice
    # and into a merged model: it stays merged, with the loaded update
    other = _fresh()
    merge_lora(other)
    other.load_state_dict(merged_state)
    assert other.q.merged
    torch.testing.assert_close(other(x), expected, atol=1e-5, rtol=1e-5)
    unmerge_lora(other)
    torch.testing.assert_close(other.q.weight, unmerged_state["q.weight"], atol=1e-5, rtol=1e-5)


def test_save_checkpoint_while_merged_loads_the_trained_model(tmp_path) -> None:
    model = _trained()
    x = torch.randn(2, 5, 16)
    expected = model(x)
    merge_lora(model)
    save_checkpoint(tmp_path / "ckpt", model=model, state={"step": 1})
    fresh = _fresh()
    load_checkpoint(tmp_path / "ckpt", model=fresh)
    assert not fresh.q.merged
    torch.testing.assert_close(fresh(x), expected, atol=1e-5, rtol=1e-5)


def test_keep_vars_state_dict_of_a_merged_layer_is_the_unmerged_weight() -> None:
    layer = LoRALinear.from_layer(nn.Linear(8, 4), r=2, alpha=4)
    with torch.no_grad():
        layer.lora_B.normal_()
    base = layer.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer.state_dict(keep_vars=True)["weight"], base, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(layer.weight, base)  # control: the live weight is merged


# ----- item 7: tied weights (HF GPT-2 wte / lm_head) -----------------------------------------------------------


def _gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=40, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    return model


@pytest.mark.parametrize(("target", "other"), [("lm_head", "transformer.wte"), ("transformer.wte", "lm_head")])
def test_merging_lora_on_a_tied_weight_names_both_modules(target: str, other: str) -> None:
    model = _gpt2()
    ids = torch.randint(0, 40, (2, 6))
    apply_lora(model, [target], r=2, alpha=4)
    layer = model.get_submodule(target)
    with torch.no_grad():
        layer.lora_B.normal_()
    before = model(ids).logits
    weight = model.transformer.wte.weight.detach().clone()
    with pytest.raises(ValueError, match=rf"cannot merge LoRA into '{target}': its weight is tied to '{other}'"):
        merge_lora(model)
    with pytest.raises(ValueError, match=rf"tied to '{other}'"):
        remove_lora(model, merge=True)
    # nothing changed: the tied weight, the merge flag and the outputs
    assert torch.equal(model.transformer.wte.weight, weight) and not layer.merged
    torch.testing.assert_close(model(ids).logits, before)
    remove_lora(model, merge=False)  # dropping the update is always safe
    assert model.lm_head.weight is model.transformer.wte.weight


def test_unmerged_lora_on_a_tied_head_leaves_the_embedding_alone() -> None:
    """Targeting a tied weight is correct while unmerged: only the wrapped module's output changes."""
    model = _gpt2()
    ids = torch.randint(0, 40, (2, 6))
    embed_before = model.transformer.wte(ids).detach().clone()
    logits_before = model(ids).logits.detach().clone()
    apply_lora(model, ["lm_head"], r=2, alpha=4)
    with torch.no_grad():
        model.lm_head.lora_B.normal_()
    torch.testing.assert_close(model.transformer.wte(ids), embed_before)
    assert not torch.allclose(model(ids).logits, logits_before)  # control: the head did change


# ----- item 10: alpha, dropout, dtypes --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_alpha_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"alpha must be a finite positive number, got"):
        LoRALinear.from_layer(nn.Linear(4, 4), r=2, alpha=alpha)
    with pytest.raises(ValueError, match=r"alpha must be a finite positive number"):
        apply_lora(Attention(8, heads=2), "q", alpha=alpha)


@pytest.mark.parametrize("p", [0.99999, 1e-5, 1e-4, 0.9999])
def test_lora_dropout_extreme_probabilities_are_exact(p: float) -> None:
    """p=0.99999 raised ZeroDivisionError and p=1e-5 silently became 0 (15-bit rounding); both are exact now."""
    drop = LoRADropout(p)
    x = torch.ones(400_000)
    y = drop(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)), rtol=1e-6, atol=0)
    rate = 1 - kept.float().mean().item()
    std = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(rate - p) < 5 * std + 1e-6, (rate, p)


def test_lora_dropout_refuses_p_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\), got 1.0"):
        LoRADropout(1.0)


def test_merge_on_a_float64_base_stays_float64() -> None:
    torch.manual_seed(0)
    base = nn.Linear(32, 16).double()
    layer = LoRALinear.from_layer(base, r=4, alpha=8)
    assert layer.lora_A.dtype == torch.float64
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 32, dtype=torch.float64)
    exact = x @ (base.weight + (layer.lora_B @ layer.lora_A) * layer.scaling).T + base.bias
    layer.merge()
    assert layer.weight.dtype == torch.float64
    # a float32 delta would leave errors around 1e-7; float64 keeps them near 1e-15
    assert (layer(x) - exact).abs().max().item() < 1e-12
    before = base.weight.detach().clone()
    layer.unmerge()
    assert (layer.weight - (before - layer.delta_weight())).abs().max().item() < 1e-12


# ----- LoRAConv1D without importing transformers at import time ---------------------------------------------


def test_lora_conv1d_is_also_a_transformers_conv1d() -> None:
    from transformers.pytorch_utils import Conv1D

    from vlblocks.peft import LoRAConv1D

    layer = LoRAConv1D.from_layer(Conv1D(6, 4), r=2, alpha=4)
    assert isinstance(layer, Conv1D) and isinstance(layer, LoRAConv1D)
    assert type(layer) is type(LoRAConv1D.from_layer(Conv1D(6, 4), r=2, alpha=4))  # one class, made once
    with pytest.raises(TypeError, match="expects a Conv1D, got Linear"):
        LoRAConv1D.from_layer(nn.Linear(4, 4), r=2, alpha=4)
