"""Tests of CoAttentionLayer / CoAttentionFusion: shapes, masks, gradients, widths, sharing, skip, golden, two paths."""

from __future__ import annotations

import math

import pytest
import torch

from vlblocks.fusion import CoAttentionFusion, CoAttentionLayer, FusionOutput
from vlblocks.layers import Attention

B, NI, NT = 2, 5, 7


def _inputs(di: int = 48, dt: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.randn(B, NI, di)
    text = torch.randn(B, NT, dt)
    text_mask = torch.ones(B, NT, dtype=torch.bool)
    text_mask[1, 4:] = False  # second question has 3 padding tokens
    return image, text, text_mask


def _perturb(module: torch.nn.Module) -> None:
    """Move every parameter off its init (LayerNorms start at 1 / 0) so the checks see all of them."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("pool", ["concat", "add", "mean"])
@pytest.mark.parametrize("depth", [1, 2])
def test_shapes_all_pools_and_depths(pool: str, depth: int) -> None:
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2, depth=depth, pool=pool)
    image, text, text_mask = _inputs()
    out = fusion(image, text, text_mask=text_mask)
    assert isinstance(out, FusionOutput)
    assert fusion.out_dim == (80 if pool == "concat" else 40)
    assert out.pooled.shape == (B, fusion.out_dim)
    assert out.image_tokens.shape == (B, NI, 40) and out.text_tokens.shape == (B, NT, 40)
    assert all(torch.isfinite(t).all() for t in out)
    assert len(fusion.layers) == depth


def test_pools_are_sum_mean_and_concat_of_the_same_cls() -> None:
    concat = CoAttentionFusion(32, 32, heads=2, pool="concat")
    add = CoAttentionFusion(32, 32, heads=2, pool="add")
    mean = CoAttentionFusion(32, 32, heads=2, pool="mean")
    add.load_state_dict(concat.state_dict())
    mean.load_state_dict(concat.state_dict())
    image, text, text_mask = _inputs(32, 32)
    c = concat(image, text, text_mask=text_mask).pooled
    a = add(image, text, text_mask=text_mask).pooled
    m = mean(image, text, text_mask=text_mask).pooled
    torch.testing.assert_close(a, c[:, :32] + c[:, 32:])
    torch.testing.assert_close(m, a / 2)


@pytest.mark.parametrize("self_attn", [False, True])
def test_padded_text_tokens_change_nothing(self_attn: bool) -> None:
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2, depth=2, self_attn=self_attn).eval()
    image, text, text_mask = _inputs()
    out = fusion(image, text, text_mask=text_mask)
    text2 = text.clone()
    text2[~text_mask] = 100.0 * torch.randn(int((~text_mask).sum()), 32)  # only padding changes
    out2 = fusion(image, text2, text_mask=text_mask)
    torch.testing.assert_close(out2.pooled, out.pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(out2.image_tokens, out.image_tokens, atol=1e-6, rtol=0)
    real = text_mask
    torch.testing.assert_close(out2.text_tokens[real], out.text_tokens[real], atol=1e-6, rtol=0)
    # the check can fail: without the mask the padding leaks into the image stream
    out3 = fusion(image, text2)
    assert not torch.allclose(out3.image_tokens, out.image_tokens, atol=1e-3)


def test_padded_image_tokens_change_nothing() -> None:
    fusion = CoAttentionFusion(32, 32, heads=2, depth=2, self_attn=True).eval()
    image, text, _ = _inputs(32, 32)
    image_mask = torch.ones(B, NI, dtype=torch.bool)
    image_mask[0, 3:] = False
    out = fusion(image, text, image_mask=image_mask)
    image2 = image.clone()
    image2[0, 3:] = 50.0
    out2 = fusion(image2, text, image_mask=image_mask)
    torch.testing.assert_close(out2.pooled, out.pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(out2.text_tokens, out.text_tokens, atol=1e-6, rtol=0)
    torch.testing.assert_close(out2.image_tokens[image_mask], out.image_tokens[image_mask], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shared_cross,self_attn", [(False, False), (True, True)])
def test_every_parameter_and_both_inputs_get_gradients(shared_cross: bool, self_attn: bool) -> None:
    fusion = CoAttentionFusion(
        48, 32, dim=40, heads=2, depth=2, shared_cross=shared_cross, self_attn=self_attn, dropout=0.1
    )
    image, text, text_mask = _inputs()
    image.requires_grad_(True)
    text.requires_grad_(True)
    fusion(image, text, text_mask=text_mask).pooled.square().sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert image.grad.abs().sum() > 0 and text.grad.abs().sum() > 0
    assert text.grad[~text_mask].abs().max() == 0  # padding receives no gradient


def test_different_widths_are_projected_equal_widths_are_identity() -> None:
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2)
    assert isinstance(fusion.image_proj, torch.nn.Linear) and fusion.image_proj.weight.shape == (40, 48)
    assert isinstance(fusion.text_proj, torch.nn.Linear) and fusion.text_proj.weight.shape == (40, 32)
    default = CoAttentionFusion(48, 32, heads=2)  # dim defaults to dim_text
    assert default.dim == 32
    assert isinstance(default.text_proj, torch.nn.Identity) and isinstance(
        default.image_proj, torch.nn.Linear
    )
    image, text, text_mask = _inputs()
    assert default(image, text, text_mask=text_mask).pooled.shape == (B, 64)


def test_shared_cross_shares_one_module() -> None:
    kwargs = dict(heads=2, depth=2)
    separate = CoAttentionFusion(32, 32, **kwargs)
    shared = CoAttentionFusion(32, 32, shared_cross=True, **kwargs)
    one_attention = sum(p.numel() for p in Attention(32, heads=2).parameters())
    n_sep = sum(p.numel() for p in separate.parameters())
    n_sh = sum(p.numel() for p in shared.parameters())
    assert n_sep - n_sh == 2 * one_attention  # one cross-attention fewer per layer
    for layer in shared.layers:
        to_text, to_image = layer.cross_attentions
        assert to_text is to_image
    for layer in separate.layers:
        to_text, to_image = layer.cross_attentions
        assert to_text is not to_image
    assert not any(k.startswith("layers.0.text_cross.") for k in shared.state_dict())


def test_encoder_skip_adds_the_projected_input_cls() -> None:
    with_skip = CoAttentionFusion(48, 32, dim=40, heads=2, encoder_skip=True)
    without = CoAttentionFusion(48, 32, dim=40, heads=2, encoder_skip=False)
    without.load_state_dict(with_skip.state_dict())
    image, text, text_mask = _inputs()
    a = with_skip(image, text, text_mask=text_mask)
    b = without(image, text, text_mask=text_mask)
    assert not torch.allclose(a.pooled, b.pooled)
    torch.testing.assert_close(a.image_tokens, b.image_tokens)  # skip only touches the pooled vector
    skip = torch.cat([with_skip.image_proj(image)[:, 0], with_skip.text_proj(text)[:, 0]], dim=-1)
    torch.testing.assert_close(a.pooled - b.pooled, skip, atol=1e-5, rtol=1e-5)


# ----- golden: the layer's definition written out by hand --------------------------------------------------------


def _ln(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _attend(attn: Attention, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    b, nq, nk, h = x.shape[0], x.shape[1], ctx.shape[1], attn.heads
    q = (x @ attn.q.weight.T + attn.q.bias).view(b, nq, h, -1).transpose(1, 2)
    k = (ctx @ attn.k.weight.T + attn.k.bias).view(b, nk, h, -1).transpose(1, 2)
    v = (ctx @ attn.v.weight.T + attn.v.bias).view(b, nk, h, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, nq, -1)
    return out @ attn.proj.weight.T + attn.proj.bias


def _ffn(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    hidden = x @ mlp.fc1.weight.T + mlp.fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    return hidden @ mlp.fc2.weight.T + mlp.fc2.bias


@pytest.mark.parametrize("self_attn", [False, True])
def test_layer_matches_hand_written_definition(self_attn: bool) -> None:
    layer = CoAttentionLayer(32, heads=4, mlp_ratio=2.0, dropout=0.0, self_attn=self_attn)
    _perturb(layer)
    image, text, text_mask = _inputs(32, 32)
    image_mask = torch.ones(B, NI, dtype=torch.bool)
    image_mask[1, -1] = False
    got_i, got_t = layer(image, text, image_mask=image_mask, text_mask=text_mask)

    xi, xt = _ln(layer.image_cross_norm, image), _ln(layer.text_cross_norm, text)
    img = image + _attend(layer.image_cross, xi, xt, text_mask)
    txt = text + _attend(layer.text_cross, xt, xi, image_mask)
    if self_attn:
        yi, yt = _ln(layer.image_self_norm, img), _ln(layer.text_self_norm, txt)
        img = img + _attend(layer.image_self, yi, yi, image_mask)
        txt = txt + _attend(layer.text_self, yt, yt, text_mask)
    img = img + _ffn(layer.image_mlp, _ln(layer.image_mlp_norm, img))
    txt = txt + _ffn(layer.text_mlp, _ln(layer.text_mlp_norm, txt))

    torch.testing.assert_close(got_i, img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_t, txt, atol=1e-5, rtol=1e-5)


def test_fused_and_manual_attention_paths_agree(monkeypatch) -> None:
    monkeypatch.setattr(Attention, "_math_is_faster", lambda self, q, k: False)  # fused = the SDPA kernel here
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2, depth=2, self_attn=True, shared_cross=True).eval()
    _perturb(fusion)
    image, text, text_mask = _inputs()
    fused = fusion(image, text, text_mask=text_mask)
    attentions = [m for m in fusion.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 * 3  # per layer: one shared cross + two self
    for m in attentions:
        m.fused = False
    manual = fusion(image, text, text_mask=text_mask)
    for a, b in zip(fused, manual):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ----- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim_image=0, dim_text=32), "dim_image must be a positive int"),
        (dict(dim_image=32, dim_text=-1), "dim_text must be a positive int"),
        (dict(dim_image=32, dim_text=32, dim=0), "dim must be a positive int"),
        (dict(dim_image=32, dim_text=32, depth=0), "depth must be a positive int"),
        (dict(dim_image=32, dim_text=32, pool="max"), "pool must be one of"),
        (dict(dim_image=32, dim_text=32, mlp_ratio=0.0), "mlp_ratio must be a finite positive number"),
        (dict(dim_image=32, dim_text=32, dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (dict(dim_image=32, dim_text=32, heads=True), "heads must be a positive int, got True"),
    ],
)
def test_constructor_errors(kwargs: dict, match: str) -> None:
    di, dt = kwargs.pop("dim_image"), kwargs.pop("dim_text")
    kwargs.setdefault("heads", 2)
    with pytest.raises(ValueError, match=match):
        CoAttentionFusion(di, dt, **kwargs)


def test_layer_constructor_errors() -> None:
    with pytest.raises(ValueError, match="dim must be a positive int, got 2.5"):
        CoAttentionLayer(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mlp_ratio must be a finite positive number"):
        CoAttentionLayer(32, heads=2, mlp_ratio=-1.0)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        CoAttentionLayer(32, heads=2, dropout=-0.1)


def test_forward_errors() -> None:
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2)
    image, text, text_mask = _inputs()
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(B, Ni, 48\), got \(2, 5, 32\)"):
        fusion(torch.randn(B, NI, 32), text)
    with pytest.raises(ValueError, match=r"text_tokens must have shape \(B, Nt, 32\), got \(2, 7, 48\)"):
        fusion(image, torch.randn(B, NT, 48))
    with pytest.raises(ValueError, match=r"image_tokens must have shape .* got \(2, 48\)"):
        fusion(image[:, 0], text)
    with pytest.raises(ValueError, match=r"batch size of image_tokens \(2\), got 3"):
        fusion(image, torch.randn(3, NT, 32))
    with pytest.raises(ValueError, match=r"text_mask must have shape \(2, 7\), got \(2, 6\)"):
        fusion(image, text, text_mask=text_mask[:, :6])
    with pytest.raises(ValueError, match=r"image_mask must have shape \(2, 5\), got \(2, 7\)"):
        fusion(image, text, image_mask=text_mask)
    with pytest.raises(TypeError, match="text_mask must be a bool tensor"):
        fusion(image, text, text_mask=text_mask.long())
    layer = CoAttentionLayer(32, heads=2)
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(B, Ni, 32\)"):
        layer(torch.randn(B, NI, 40), torch.randn(B, NT, 32))


@pytest.mark.parametrize("summary", ["max", "mean"])
def test_token_summaries_are_masked_max_and_mean(summary: str) -> None:
    image, text, text_mask = _inputs()
    fusion = CoAttentionFusion(48, 32, dim=32, heads=2, summary=summary, encoder_skip=False).eval()
    _perturb(fusion)
    out = fusion(image, text, text_mask=text_mask)
    real = out.text_tokens[1, text_mask[1]]  # (Nt_real, D) of the padded question
    expect_text = real.amax(0) if summary == "max" else real.mean(0)
    expect_image = out.image_tokens[1].amax(0) if summary == "max" else out.image_tokens[1].mean(0)
    torch.testing.assert_close(out.pooled[1], torch.cat([expect_image, expect_text]))
    # padded text tokens still change nothing
    text2 = text.clone()
    text2[1, 4:] = 50.0
    torch.testing.assert_close(fusion(image, text2, text_mask=text_mask).pooled, out.pooled)


def test_summary_must_be_known() -> None:
    with pytest.raises(ValueError, match="summary must be one of"):
        CoAttentionFusion(48, 32, summary="attention")


@pytest.mark.parametrize("summary", ["max", "mean"])
def test_fully_padded_text_row_pools_to_zeros_and_the_head_stays_finite(summary: str) -> None:
    """Regression (issue 7 item 10): summary="max" pooled -3.4e38 for a row without real text and the head gave NaN."""
    from vlblocks.heads import MLPHead

    image, text, text_mask = _inputs()
    text_mask = text_mask.clone()
    text_mask[1] = False  # question 1 is all padding
    fusion = CoAttentionFusion(48, 32, dim=32, heads=2, summary=summary, encoder_skip=False).eval()
    _perturb(fusion)
    out = fusion(image, text, text_mask=text_mask)
    assert torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.pooled[1, 32:], torch.zeros(32))  # the text summary of the empty row
    assert out.pooled[0, 32:].abs().sum() > 0  # control: a real row is not zero
    logits = MLPHead(fusion.out_dim, 5, hidden_dim=16)(out.pooled)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("shared_cross", "self_attn", "depth"), [(False, False, 1), (True, True, 2)])
def test_image_index_equals_gathered_images_forward_and_backward(
    shared_cross: bool, self_attn: bool, depth: int
) -> None:
    """Several texts about one image: projecting each distinct image once gives the per-text result and gradients."""
    fusion = CoAttentionFusion(
        48, 32, dim=40, heads=2, depth=depth, shared_cross=shared_cross, self_attn=self_attn, summary="max"
    )
    _perturb(fusion)
    images = torch.randn(3, NI, 48, requires_grad=True)  # 3 distinct images
    text = torch.randn(5, NT, 32)
    index = torch.tensor([2, 0, 2, 1, 2])
    text_mask = torch.ones(5, NT, dtype=torch.bool)
    text_mask[3, 2:] = False
    image_mask = torch.ones(5, NI, dtype=torch.bool)
    image_mask[1, -1] = False
    out = fusion(images, text, image_mask=image_mask, text_mask=text_mask, image_index=index)
    ref = fusion(images[index], text, image_mask=image_mask, text_mask=text_mask)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    grad = torch.randn_like(out.pooled)
    params = [images, *fusion.parameters()]
    got = torch.autograd.grad(out.pooled, params, grad)
    want = torch.autograd.grad(ref.pooled, params, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_image_index_errors() -> None:
    fusion = CoAttentionFusion(48, 32, dim=40, heads=2)
    images, text = torch.randn(3, NI, 48), torch.randn(4, NT, 32)
    with pytest.raises(ValueError, match=r"image_index must have shape \(4,\) \(one per text\), got \(3,\)"):
        fusion(images, text, image_index=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"image_index must lie in \[0, 3\)"):
        fusion(images, text, image_index=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"image_mask must have shape \(4, 5\), got \(3, 5\)"):
        fusion(
            images,
            text,
            image_mask=torch.ones(3, NI, dtype=torch.bool),
            image_index=torch.tensor([0, 1, 2, 0]),
        )
    with pytest.raises(TypeError, match="image_index"):
        fusion(images, text, image_index=torch.tensor([0.0, 1.0, 2.0, 0.0]))
