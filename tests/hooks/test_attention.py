"""Tests of record_attention on vlblocks Attention and timm models: eager parity, paths, outputs, restore, errors.

HF transformers models are in test_attention_hf.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlblocks.hooks import attention_layers, record_attention
from vlblocks.layers import Attention

B, N, NC, D = 2, 6, 4, 32


class TwoLayers(nn.Module):
    """A self-attention then a cross-attention (with a key padding mask on the context)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = Attention(D, heads=2)
        self.cross_attn = Attention(D, heads=2, dim_context=24)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        return x + self.cross_attn(x, context, mask=mask)


def _vlblocks_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.ones(B, NC, dtype=torch.bool)
    mask[1, 2:] = False
    return torch.randn(B, N, D), torch.randn(B, NC, 24), mask


def _reference_probs(attn: Attention, x: torch.Tensor, context: torch.Tensor, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) written out by hand from the layer's weights: (B, H, Nq, Nk)."""
    q = attn.q(x).reshape(x.shape[0], x.shape[1], attn.heads, -1).transpose(1, 2)
    k = attn.k(context).reshape(context.shape[0], context.shape[1], attn.heads, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / attn.dim_head**0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def test_vlblocks_maps_equal_hand_written_attention() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    with record_attention(model) as rec:
        model(x, context, mask)
    assert rec.layers == ("self_attn", "cross_attn")
    ref_self = _reference_probs(model.self_attn, x, x)
    torch.testing.assert_close(rec.maps["self_attn"], ref_self, atol=1e-5, rtol=0)
    h = x + model.self_attn(x)
    ref_cross = _reference_probs(model.cross_attn, h, context, mask)
    torch.testing.assert_close(rec.maps["cross_attn"], ref_cross, atol=1e-5, rtol=0)
    assert rec.maps["cross_attn"][1, :, :, 2:].abs().max() == 0  # padded keys get nothing
    # control: the other layer's map is not the same
    assert not torch.allclose(rec.maps["self_attn"][:, :, :, :NC], ref_cross, atol=1e-3)


def test_vlblocks_only_selected_layer_leaves_fused_path_and_state_restored() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    expected = model(x, context, mask)
    seen: dict[str, list] = {"fused": [], "probs": []}
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            m.register_forward_pre_hook(lambda mod, _a, n=name: seen["fused"].append((n, mod.fused)))
            m.attn_probs.register_forward_hook(lambda _m, _a, _o, n=name: seen["probs"].append(n))
    with record_attention(model, "cross_*") as rec:
        out = model(x, context, mask)
    assert seen["fused"] == [("self_attn", True), ("cross_attn", False)]
    assert seen["probs"] == ["cross_attn"]  # only the selected layer ran the manual path
    assert list(rec.maps) == ["cross_attn"]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert model.self_attn.fused and model.cross_attn.fused
    assert len(model.cross_attn.attn_probs._forward_hooks) == 1  # only the test's own hook is left


def test_vlblocks_state_restored_after_exception() -> None:
    model = TwoLayers().eval()
    model.self_attn.fused = False  # a layer the user had put on the manual path stays there
    hooks_before = len(model.cross_attn.attn_probs._forward_hooks)
    with pytest.raises(KeyError, match="boom"):
        with record_attention(model):
            assert not model.cross_attn.fused
            raise KeyError("boom")
    assert model.cross_attn.fused and not model.self_attn.fused
    assert len(model.cross_attn.attn_probs._forward_hooks) == hooks_before


def test_rows_and_head_reduce_vlblocks() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    with record_attention(model, "self_attn") as full:
        model(x, context, mask)
    with record_attention(model, "self_attn", rows=[0, -1], head_reduce="max") as part:
        model(x, context, mask)
    expected = full.maps["self_attn"][:, :, [0, N - 1]].amax(dim=1)  # (B, 2, N)
    assert part.maps["self_attn"].shape == (B, 2, N)
    torch.testing.assert_close(part.maps["self_attn"], expected, atol=1e-6, rtol=0)


def test_every_call_is_kept_in_history() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    with record_attention(model, "self_attn") as rec:
        model(x, context, mask)
        model(2 * x, context, mask)
    first, second = rec.history["self_attn"]
    assert rec.maps["self_attn"] is second and not torch.allclose(first, second)
    rec.clear()
    assert rec.maps == {}


def test_bfloat16_model_records_float32_probabilities() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    with record_attention(model, "self_attn") as rec32:
        model(x, context, mask)
    half = copy.deepcopy(model).to(torch.bfloat16)
    with record_attention(half, "self_attn") as rec16:
        half(x.bfloat16(), context.bfloat16(), mask)
    probs = rec16.maps["self_attn"]
    assert probs.dtype == torch.float32
    # a softmax rounded to bfloat16 would miss 1 by ~1e-3; the float32 one does not
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, 2, N), atol=1e-6, rtol=0)
    torch.testing.assert_close(probs, rec32.maps["self_attn"], atol=2e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------------------- timm

TIMM_MODELS = [
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "eva02_tiny_patch14_224",
]


def _timm(name: str) -> nn.Module:
    timm = pytest.importorskip("timm")
    kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=3)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # move zero-initialised biases and layer scales off their init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _timm_manual_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's own manual path (fused_attn=False): the probabilities its attn_drop receives, per block."""
    manual = copy.deepcopy(model)
    maps: list[torch.Tensor] = []
    for block in manual.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_pre_hook(lambda _m, args: maps.append(args[0]))
    manual(x)
    return maps


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_maps_equal_timm_manual_path_and_outputs_identical(name: str) -> None:
    model = _timm(name)
    x = torch.randn(B, 3, 32, 32)
    reference = _timm_manual_maps(model, x)
    expected = model(x)
    assert model.blocks[0].attn.fused_attn  # the default: fused
    with record_attention(model) as rec:
        out = model(x)
    assert torch.equal(out, expected)  # the kernel still computes the output: bit-identical
    assert rec.layers == ("blocks.0.attn", "blocks.1.attn")
    for layer, ref in zip(rec.layers, reference):
        torch.testing.assert_close(rec.maps[layer], ref, atol=1e-5, rtol=0)
    # control: a different input gives different maps
    with record_attention(model, "blocks.1.attn") as other:
        model(x.flip(-1))
    assert not torch.allclose(other.maps["blocks.1.attn"], reference[1], atol=1e-3)


def test_timm_manual_model_is_recorded_on_its_manual_path() -> None:
    model = _timm("vit_tiny_patch16_224")
    x = torch.randn(B, 3, 32, 32)
    reference = _timm_manual_maps(model, x)
    for block in model.blocks:
        block.attn.fused_attn = False
    with record_attention(model, r"blocks\.1\.attn", rows=0) as rec:
        model(x)
    torch.testing.assert_close(rec.maps["blocks.1.attn"], reference[1][:, :, :1], atol=1e-6, rtol=0)
    assert not model.blocks[1].attn.fused_attn


def test_timm_unselected_layers_run_fused_and_nothing_leaves_the_kernel(monkeypatch) -> None:
    model = _timm("vit_tiny_patch16_224")
    x = torch.randn(B, 3, 32, 32)
    kernel_calls: list[int] = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        kernel_calls.append(args[0].shape[-2])
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    manual_calls: list[int] = []
    for i, block in enumerate(model.blocks):
        block.attn.attn_drop.register_forward_pre_hook(lambda _m, _a, i=i: manual_calls.append(i))
    with record_attention(model, "blocks.0.*") as rec:
        model(x)
        assert F.scaled_dot_product_attention is counting  # no tap outside a selected layer's forward
    assert (
        len(kernel_calls) == 2 and manual_calls == []
    )  # both layers ran the fused kernel, none the manual path
    assert list(rec.maps) == ["blocks.0.attn"]
    assert F.scaled_dot_product_attention is counting


def test_timm_state_restored_after_exception_inside_forward() -> None:
    model = _timm("vit_tiny_patch16_224")
    real = F.scaled_dot_product_attention
    model.blocks[1].mlp.register_forward_pre_hook(
        lambda _m, _a: (_ for _ in ()).throw(RuntimeError("mlp broke"))
    )
    with pytest.raises(RuntimeError, match="mlp broke"):
        with record_attention(model, "blocks.*.attn"):
            model(torch.randn(B, 3, 32, 32))
    assert F.scaled_dot_product_attention is real
    assert all(not b.attn._forward_hooks and not b.attn._forward_pre_hooks for b in model.blocks)


def test_timm_glob_and_regex_select_the_same_layers() -> None:
    model = _timm("vit_tiny_patch16_224")
    assert attention_layers(model) == ["blocks.0.attn", "blocks.1.attn"]
    x = torch.randn(1, 3, 32, 32)
    with record_attention(model, "blocks.[01].attn") as a:
        model(x)
    with record_attention(model, [r"blocks\.\d+\.attn"]) as b:
        model(x)
    assert a.layers == b.layers == ("blocks.0.attn", "blocks.1.attn")


def test_timm_rows_are_computed_only_for_the_cls_row() -> None:
    model = _timm("deit_tiny_distilled_patch16_224")
    x = torch.randn(B, 3, 32, 32)
    with record_attention(model, "blocks.1.attn") as full:
        model(x)
    with record_attention(model, "blocks.1.attn", rows=1, head_reduce="mean") as dist:
        model(x)
    expected = full.maps["blocks.1.attn"][:, :, 1:2].mean(dim=1)  # the distillation token's row (B, 1, Nk)
    torch.testing.assert_close(dist.maps["blocks.1.attn"], expected, atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------------------------------- errors


def test_pattern_matching_nothing_lists_the_attention_layers() -> None:
    model = TwoLayers()
    with pytest.raises(
        ValueError, match=r"'blocks\.\*' matches no attention layer.*\['self_attn', 'cross_attn'\]"
    ):
        with record_attention(model, "blocks.*"):
            pass


def test_model_without_attention_is_refused() -> None:
    with pytest.raises(ValueError, match="has no attention layer"):
        with record_attention(nn.Linear(3, 3)):
            pass
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        with record_attention("vit"):  # type: ignore[arg-type]
            pass


def test_selected_layer_that_recorded_nothing_is_named() -> None:
    model = TwoLayers().eval()
    x = torch.randn(B, N, D)
    with pytest.raises(RuntimeError, match=r"recorded nothing: \['cross_attn'\]"):
        with record_attention(model):
            model.self_attn(x)  # the cross-attention never runs
    assert model.cross_attn.fused  # restored before the error


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_reduce": "sum"}, "head_reduce must be one of"),
        ({"rows": "cls"}, "rows must be None, an int"),
        ({"rows": []}, "rows must be None, an int"),
        ({"layers": []}, "layers must be None, a non-empty string"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        with record_attention(TwoLayers(), **kwargs):
            pass


def test_rows_out_of_range() -> None:
    model = TwoLayers().eval()
    x, context, mask = _vlblocks_inputs()
    with pytest.raises(ValueError, match=r"rows must index the 6 queries of layer 'self_attn', got 9"):
        with record_attention(model, "self_attn", rows=9):
            model(x, context, mask)


def test_timm_bfloat16_model_records_float32_probabilities() -> None:
    model = _timm("vit_tiny_patch16_224")
    x = torch.randn(B, 3, 32, 32)
    with record_attention(model, "blocks.1.attn") as rec32:
        model(x)
    half = copy.deepcopy(model).to(torch.bfloat16)
    with record_attention(half, "blocks.1.attn") as rec16:
        half(x.bfloat16())
    probs = rec16.maps["blocks.1.attn"]
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(probs, rec32.maps["blocks.1.attn"], atol=5e-2, rtol=0)


def test_blocks_built_on_attention_are_recorded() -> None:
    from vlblocks.fusion import CoAttentionFusion

    fusion = CoAttentionFusion(D, 24, dim=D, heads=2, depth=2).eval()
    image, text = torch.randn(B, 5, D), torch.randn(B, NC, 24)
    text_mask = torch.ones(B, NC, dtype=torch.bool)
    text_mask[0, 3:] = False
    expected = fusion(image, text, text_mask=text_mask).pooled
    names = attention_layers(fusion)
    assert len(names) == 4  # two directions per layer
    with record_attention(fusion, names[0]) as rec:  # the first layer's image -> text attention
        pooled = fusion(image, text, text_mask=text_mask).pooled
    torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=0)
    probs = rec.maps[names[0]]
    assert probs.shape == (B, 2, 5, NC)
    assert probs[0, :, :, 3:].max() == 0  # the padded text tokens get nothing
    assert probs[1, :, :, 3:].min() > 0  # control: the same tokens unpadded do
