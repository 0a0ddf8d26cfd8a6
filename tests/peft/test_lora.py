"""LoRA layers: weight sharing, identity at init, the LoRA formula, merge / unmerge, dtypes, compile, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from vlblocks.layers.attention import Attention
from vlblocks.peft import LoRAConv1D, LoRAConv2d, LoRAEmbedding, LoRALayer, LoRALinear, apply_lora
from vlblocks.peft.lora import LoRADropout


def _cases() -> list[tuple[type[LoRALayer], nn.Module, torch.Tensor]]:
    """(LoRA class, base layer, input) for every supported layer type."""
    return [
        (LoRALinear, nn.Linear(16, 12), torch.randn(2, 5, 16)),
        (LoRAConv1D, Conv1D(12, 16), torch.randn(2, 5, 16)),
        (LoRAEmbedding, nn.Embedding(20, 12, padding_idx=0), torch.randint(0, 20, (2, 5))),
        (
            LoRAConv2d,
            nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect"),
            torch.randn(2, 4, 9, 9),
        ),
    ]


CASES = _cases()
IDS = [c[0].__name__ for c in CASES]


def _wrap(cls: type[LoRALayer], base: nn.Module, **kw) -> LoRALayer:
    kw = {"r": 4, "alpha": 8, **kw}
    return cls.from_layer(base, **kw)


def _randomize(layer: LoRALayer, std: float = 0.5) -> None:
    with torch.no_grad():
        layer.lora_A.normal_()
        layer.lora_B.normal_(std=std)


@pytest.mark.parametrize(("cls", "base", "x"), CASES, ids=IDS)
def test_shares_weight_keeps_keys_and_is_identity_at_init(cls, base, x) -> None:
    layer = _wrap(cls, base)
    assert isinstance(layer, type(base)) and isinstance(layer, LoRALayer)
    assert layer.weight is base.weight  # shared, not copied
    assert set(layer.state_dict()) == set(base.state_dict()) | {"lora_A", "lora_B"}
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert torch.equal(layer(x), base(x))
    assert layer.scaling == 2.0 and "r=4" in repr(layer)


def test_shapes_and_scaling() -> None:
    lin = LoRALinear.from_layer(nn.Linear(16, 12), r=4, alpha=8, use_rslora=True)
    assert lin.lora_A.shape == (4, 16) and lin.lora_B.shape == (12, 4)
    assert lin.scaling == pytest.approx(8 / math.sqrt(4))
    c1 = LoRAConv1D.from_layer(Conv1D(12, 16), r=4, alpha=8)
    assert c1.lora_A.shape == (4, 16) and c1.lora_B.shape == (12, 4) and c1.scaling == 2.0
    emb = LoRAEmbedding.from_layer(nn.Embedding(20, 12, padding_idx=3), r=4, alpha=8)
    assert emb.lora_A.shape == (4, 20) and emb.lora_B.shape == (12, 4)
    assert torch.count_nonzero(emb.lora_A[:, 3]) == 0  # padding column starts at zero
    conv = LoRAConv2d.from_layer(nn.Conv2d(4, 6, (3, 5), groups=2), r=4, alpha=8)
    assert conv.lora_A.shape == (4, 2, 3, 5) and conv.lora_B.shape == (6, 2, 1, 1)


def test_linear_golden_formula() -> None:
    base = nn.Linear(16, 12)
    layer = LoRALinear.from_layer(base, r=4, alpha=6)
    _randomize(layer)
    x = torch.randn(3, 16)
    expected = x @ base.weight.T + base.bias + 1.5 * (x @ layer.lora_A.T) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_and_embedding_golden_formula() -> None:
    c1 = LoRAConv1D.from_layer(Conv1D(12, 16), r=4, alpha=8)
    _randomize(c1)
    x = torch.randn(2, 3, 16)
    expected = x @ c1.weight + c1.bias + 2.0 * (x @ c1.lora_A.T) @ c1.lora_B.T
    torch.testing.assert_close(c1(x), expected, rtol=1e-5, atol=1e-5)
    emb = LoRAEmbedding.from_layer(nn.Embedding(20, 12), r=4, alpha=8)
    _randomize(emb)
    ids = torch.randint(0, 20, (2, 5))
    expected = emb.weight[ids] + 2.0 * emb.lora_A.T[ids] @ emb.lora_B.T
    torch.testing.assert_close(emb(ids), expected, rtol=1e-5, atol=1e-5)


def test_conv2d_keeps_conv_settings_and_equals_merged_weight_conv() -> None:
    base = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect")
    layer = LoRAConv2d.from_layer(base, r=4, alpha=8)
    _randomize(layer)
    assert (layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode) == (
        (2, 2),
        (2, 2),
        (2, 2),
        2,
        "reflect",
    )
    x = torch.randn(2, 4, 9, 9)
    weight = base.weight + layer.delta_weight()  # the update as one conv weight (out, in/groups, kh, kw)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    expected = F.conv2d(padded, weight, base.bias, stride=2, dilation=2, groups=2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("cls", "base", "x"), _cases(), ids=IDS)
def test_merge_equals_unmerged_round_trip_and_skips_branch(cls, base, x) -> None:
    layer = _wrap(cls, base)
    _randomize(layer, std=0.02)  # an update of a trained adapter's size (a few % of the weight)
    original = layer.weight.detach().clone()
    unmerged = layer(x)
    assert not torch.allclose(unmerged, layer.to_base(merge=False)(x))  # the update is active
    layer.merge()
    assert layer.merged and not torch.equal(layer.weight, original)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    layer.merge()  # idempotent
    with torch.no_grad():
        saved_a = layer.lora_A.clone()
        layer.lora_A.fill_(float("nan"))  # a merged layer never runs the LoRA branch
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        layer.lora_A.copy_(saved_a)
    layer.unmerge()
    assert not layer.merged
    rel = (layer.weight - original).norm() / original.norm()
    assert rel < 1e-6
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("cls", "base", "x"), _cases(), ids=IDS)
def test_gradients_reach_lora_parameters(cls, base, x) -> None:
    layer = _wrap(cls, base)
    _randomize(layer)
    base.weight.requires_grad_(False)
    if x.is_floating_point():
        x.requires_grad_(True)
    layer(x).square().sum().backward()
    for p in (layer.lora_A, layer.lora_B):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert base.weight.grad is None
    if x.is_floating_point():
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_to_base_returns_plain_layer_sharing_the_weight() -> None:
    base = nn.Linear(8, 4)
    layer = LoRALinear.from_layer(base, r=2, alpha=4)
    _randomize(layer)
    x = torch.randn(3, 8)
    y = layer(x)
    plain = layer.to_base(merge=True)
    assert type(plain) is nn.Linear and plain.weight is layer.weight
    assert set(plain.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(plain(x), y, rtol=1e-5, atol=1e-5)


def test_dropout_only_on_lora_input() -> None:
    assert isinstance(LoRALinear.from_layer(nn.Linear(8, 8), r=2, alpha=2).lora_dropout, nn.Identity)
    layer = LoRALinear.from_layer(nn.Linear(8, 8), r=2, alpha=2, dropout=0.5)
    assert isinstance(layer.lora_dropout, LoRADropout) and layer.lora_dropout.p == 0.5
    x = torch.randn(4, 8)
    assert torch.equal(layer.train()(x), layer.eval()(x))  # B = 0: dropout cannot change anything
    _randomize(layer)
    assert not torch.allclose(layer.train()(x), layer.eval()(x))
    assert torch.equal(layer.eval()(x), layer.eval()(x))
    frozen = LoRALinear.from_layer(nn.Linear(8, 8).eval(), r=2, alpha=2, dropout=0.5)
    assert not frozen.lora_dropout.training  # the new dropout follows the wrapped layer's mode


def test_lora_dropout_statistics_gradient_and_seeding() -> None:
    drop = LoRADropout(0.1)
    x = torch.randn(301, 333, requires_grad=True)  # odd number of elements
    y = drop(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.005  # 100k draws: std of the rate is 0.001
    scale = 32768 / (32768 - round(0.1 * 32768))
    torch.testing.assert_close(y[~dropped], x[~dropped] * scale)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() * scale)
    flat = dropped.flatten().float()  # the two halves come from the low and the high bits of the draws
    assert (
        abs(flat[: flat.numel() // 2].mean() - 0.1) < 0.007
        and abs(flat[flat.numel() // 2 :].mean() - 0.1) < 0.007
    )
    torch.manual_seed(3)
    first = drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), first) and not torch.equal(drop(x), first)
    assert drop.eval()(x) is x


def test_half_precision_base_keeps_float32_lora_and_runs_in_input_dtype() -> None:
    base = nn.Linear(16, 8).to(torch.bfloat16)
    layer = LoRALinear.from_layer(base, r=4, alpha=8)
    assert layer.lora_A.dtype == torch.float32 and layer.weight.dtype == torch.bfloat16
    _randomize(layer)
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = F.linear(x.float(), base.weight.float() + layer.delta_weight(), base.bias.float())
    torch.testing.assert_close(y.float(), ref, rtol=5e-2, atol=5e-2)
    layer.merge()
    assert layer.weight.dtype == torch.bfloat16
    torch.testing.assert_close(layer(x).float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize(
    ("kw", "arg"),
    [
        ({"r": 0}, "r"),
        ({"r": 2.5}, "r"),
        ({"r": True}, "r"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_invalid_arguments_raise(kw, arg) -> None:
    with pytest.raises(ValueError, match=rf"^{arg} must"):
        LoRALinear.from_layer(nn.Linear(4, 4), **{"r": 2, "alpha": 4, **kw})


def test_wrong_layer_type_double_wrap_and_groups_raise() -> None:
    with pytest.raises(TypeError, match="expects a Linear, got Conv2d"):
        LoRALinear.from_layer(nn.Conv2d(2, 2, 1), r=2, alpha=2)
    layer = LoRALinear.from_layer(nn.Linear(4, 4), r=2, alpha=2)
    with pytest.raises(ValueError, match="already LoRA-wrapped"):
        LoRALinear.from_layer(layer, r=2, alpha=2)
    with pytest.raises(ValueError, match=r"r must be divisible by the conv's groups \(4\), got r=2"):
        LoRAConv2d.from_layer(nn.Conv2d(4, 4, 3, groups=4), r=2, alpha=2)


def test_compile_fullgraph_no_graph_break() -> None:
    """fullgraph=True raises on any graph break; train (dropout) and eval forwards and the backward compile."""
    torch._dynamo.reset()
    attn = Attention(16, heads=2)
    apply_lora(attn, ["q", "v"], r=4, alpha=8, dropout=0.1)
    x = torch.randn(2, 5, 16)
    compiled = torch.compile(attn, fullgraph=True, backend="eager")
    out = compiled(x)  # training mode: the LoRA dropout is traced too
    out.sum().backward()
    assert attn.v.lora_B.grad is not None and attn.q.lora_A.grad is not None
    attn.eval()
    torch.testing.assert_close(compiled(x), attn(x))
