"""Segmentation heads: shapes and gradients on square and non-square grids, the formulas written out by hand,
shared Q-K, multi-layer features, upsampling, and the documented errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlblocks.heads import ConvSegHead, LinearSegHead, MaskTransformerSegHead, SharedQKAttention, join_tokens
from vlblocks.layers import Attention

B, D, C = 2, 16, 4

HEADS = {
    "linear": lambda: LinearSegHead(D, C),
    "conv": lambda: ConvSegHead(D, C),
    "conv-hidden": lambda: ConvSegHead(D, C, kernel_size=5, hidden_dim=8),
    "transformer": lambda: MaskTransformerSegHead(D, C, depth=2, heads=2, dim_head=8),
    "transformer-shared-qk": lambda: MaskTransformerSegHead(
        D, C, depth=2, heads=2, dim_head=8, shared_qk=True
    ),
}


def _perturb(module: nn.Module) -> None:
    """Move every parameter off its init (LayerNorms start at 1 / 0) so the checks see all of them."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize(("grid", "size"), [((4, 4), (16, 16)), ((3, 5), (12, 21))])
def test_shapes_and_every_parameter_gets_a_gradient(kind: str, grid: tuple, size: tuple) -> None:
    head = HEADS[kind]()
    tokens = torch.randn(B, grid[0] * grid[1], D, requires_grad=True)
    logits = head(tokens, grid=grid, size=size)
    assert logits.shape == (B, C, *size) and torch.isfinite(logits).all()
    # random weights: a plain sum is blind to mask_norm's output, which sums to zero over classes
    (logits * torch.randn_like(logits)).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", list(HEADS))
def test_upsampling_is_bilinear_resize_of_the_grid_logits(kind: str) -> None:
    head = HEADS[kind]().eval()
    tokens = torch.randn(B, 3 * 5, D)
    on_grid = head(tokens, grid=(3, 5))
    assert on_grid.shape == (B, C, 3, 5)
    torch.testing.assert_close(head(tokens, grid=(3, 5), size=(3, 5)), on_grid)
    expected = F.interpolate(on_grid, size=(9, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(head(tokens, grid=(3, 5), size=(9, 20)), expected)


def test_linear_head_classifies_each_patch_in_row_major_order() -> None:
    head = LinearSegHead(D, C)
    tokens = torch.randn(B, 3 * 5, D)
    logits = head(tokens, grid=(3, 5))
    for i in range(3):
        for j in range(5):
            expected = tokens[:, i * 5 + j] @ head.classifier.weight.T + head.classifier.bias
            torch.testing.assert_close(logits[:, :, i, j], expected)
    # control: reading the tokens in column-major order gives other logits
    per_token = tokens @ head.classifier.weight.T + head.classifier.bias  # (B, N, C)
    wrong = per_token.view(B, 5, 3, C).permute(0, 3, 2, 1)  # (B, C, 3, 5), column-major
    assert not torch.allclose(wrong, logits)


@pytest.mark.parametrize("hidden_dim", [None, 8])
def test_conv_head_keeps_the_grid_and_is_local(hidden_dim: int | None) -> None:
    head = ConvSegHead(D, C, kernel_size=3, hidden_dim=hidden_dim).eval()
    _perturb(head)
    tokens = torch.randn(1, 5 * 6, D)
    logits = head(tokens, grid=(5, 6))
    fmap = tokens.view(1, 5, 6, D).permute(0, 3, 1, 2)  # (1, D, h, w)
    torch.testing.assert_close(logits, head.net(fmap))
    if hidden_dim is None:
        torch.testing.assert_close(logits, F.conv2d(fmap, head.net.weight, head.net.bias, padding=1))
    changed = tokens.clone()
    changed[0, 2 * 6 + 3] += 5.0  # token at row 2, column 3
    diff = (head(changed, grid=(5, 6)) - logits).abs().amax(dim=(0, 1))  # (h, w)
    touched = diff > 1e-6
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[1:4, 2:5] = True  # the 3x3 neighbourhood, and nothing else
    assert torch.equal(touched, expected)


def _reference_attention(attn: Attention, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
    h, dh = attn.heads, attn.dim_head
    q = attn.q(x).view(*x.shape[:2], h, dh).transpose(1, 2)  # (B, H, N, Dh)
    k = q if shared else attn.k(x).view(*x.shape[:2], h, dh).transpose(1, 2)
    v = attn.v(x).view(*x.shape[:2], h, dh).transpose(1, 2)
    probs = (q @ k.transpose(-1, -2) * dh**-0.5).softmax(dim=-1)
    return attn.proj((probs @ v).transpose(1, 2).reshape(*x.shape[:2], h * dh))


def _reference_mask_transformer(head: MaskTransformerSegHead, x: torch.Tensor, grid: tuple) -> torch.Tensor:
    """Segmenter's decoder written out with the head's weights."""
    z = torch.cat(
        [x @ head.proj_in.weight.T + head.proj_in.bias, head.cls_emb.expand(x.shape[0], -1, -1)], dim=1
    )
    for block in head.blocks:
        z = z + _reference_attention(block.attn, block.norm1(z), shared=head.shared_qk)
        y = block.norm2(z)
        z = z + block.mlp.fc2(F.gelu(block.mlp.fc1(y)))
    z = F.layer_norm(z, (head.hidden_dim,), head.norm.weight, head.norm.bias)
    n = x.shape[1]
    p = z[:, :n] @ head.proj_patch.weight.T
    c = z[:, n:] @ head.proj_classes.weight.T
    p = p / p.norm(dim=-1, keepdim=True)
    c = c / c.norm(dim=-1, keepdim=True)
    masks = p @ c.transpose(1, 2)  # (B, N, C)
    masks = F.layer_norm(masks, (head.num_classes,), head.mask_norm.weight, head.mask_norm.bias)
    return masks.transpose(1, 2).reshape(x.shape[0], head.num_classes, *grid)


@pytest.mark.parametrize("shared_qk", [False, True])
def test_mask_transformer_matches_the_formula(shared_qk: bool) -> None:
    head = MaskTransformerSegHead(
        D, C, depth=2, heads=2, dim_head=8, hidden_dim=12, shared_qk=shared_qk
    ).eval()
    _perturb(head)
    tokens = torch.randn(B, 3 * 4, D)
    out = head(tokens, grid=(3, 4))
    torch.testing.assert_close(out, _reference_mask_transformer(head, tokens, (3, 4)), atol=1e-5, rtol=1e-5)
    # the manual (hookable) attention path gives the same logits
    for block in head.blocks:
        block.attn.fused = False
    torch.testing.assert_close(head(tokens, grid=(3, 4)), out, atol=1e-5, rtol=1e-5)


def test_shared_qk_really_shares_one_projection() -> None:
    kw = dict(depth=2, heads=2, dim_head=8)
    plain = MaskTransformerSegHead(D, C, **kw)
    shared = MaskTransformerSegHead(D, C, shared_qk=True, **kw)
    for block in shared.blocks:
        assert isinstance(block.attn, SharedQKAttention) and not hasattr(block.attn, "k")
    assert not any(".attn.k." in key for key in shared.state_dict())
    n_plain = sum(p.numel() for p in plain.parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_plain - n_shared == 2 * (D * 16 + 16)  # one (16 x D) projection and its bias per block
    # the plain head with k := q computes what the shared head computes; with its own k it does not (control)
    _perturb(shared)
    state = dict(shared.state_dict())
    for i in range(2):
        state[f"blocks.{i}.attn.k.weight"] = state[f"blocks.{i}.attn.q.weight"]
        state[f"blocks.{i}.attn.k.bias"] = state[f"blocks.{i}.attn.q.bias"]
    plain.load_state_dict(state)
    tokens = torch.randn(B, 9, D)
    torch.testing.assert_close(plain(tokens, grid=(3, 3)), shared(tokens, grid=(3, 3)))
    with torch.no_grad():
        plain.blocks[0].attn.k.weight.add_(0.5 * torch.randn_like(plain.blocks[0].attn.k.weight))
    assert not torch.allclose(plain(tokens, grid=(3, 3)), shared(tokens, grid=(3, 3)), atol=1e-4)


def _double_centred_log_probs(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """log softmax rows minus row and column means: symmetric exactly when the scores are."""
    probs = []
    handle = attn.attn_probs.register_forward_hook(lambda m, i, o: probs.append(o))
    attn(x)
    handle.remove()
    logits = probs[0].log()  # (B, H, N, N) scores minus a per-row constant
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred - centred.mean(dim=-2, keepdim=True)


def test_shared_qk_attention_scores_are_symmetric() -> None:
    attn = SharedQKAttention(D, heads=2, fused=False)
    x = torch.randn(1, 6, D)
    sym = _double_centred_log_probs(attn, x)
    torch.testing.assert_close(sym, sym.transpose(-1, -2), atol=1e-5, rtol=1e-5)
    plain = _double_centred_log_probs(Attention(D, heads=2, fused=False), x)  # control
    assert not torch.allclose(plain, plain.transpose(-1, -2), atol=1e-3)
    with pytest.raises(ValueError, match="dim_context must be None or dim=16"):
        SharedQKAttention(D, dim_context=8)


@pytest.mark.parametrize("kind", list(HEADS))
def test_batched_equals_one_by_one(kind: str) -> None:
    head = HEADS[kind]().eval()
    tokens = torch.randn(3, 12, D)
    out = head(tokens, grid=(3, 4), size=(6, 8))
    rows = torch.cat([head(tokens[i : i + 1], grid=(3, 4), size=(6, 8)) for i in range(3)])
    torch.testing.assert_close(rows, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(HEADS))
def test_multi_layer_features_are_concatenated(kind: str) -> None:
    head = HEADS[kind]().eval()  # dim 16 = two layers of width 8
    layers = [torch.randn(B, 6, 8), torch.randn(B, 6, 8)]
    torch.testing.assert_close(head(layers, grid=(2, 3)), head(torch.cat(layers, dim=-1), grid=(2, 3)))
    assert torch.equal(join_tokens(layers), torch.cat(layers, dim=-1))
    assert not torch.allclose(head(layers[::-1], grid=(2, 3)), head(layers, grid=(2, 3)))  # order matters
    with pytest.raises(ValueError, match=r"tokens\[1\] must have the batch and token count of tokens\[0\]"):
        head([layers[0], torch.randn(B, 5, 8)], grid=(2, 3))
    with pytest.raises(TypeError, match="tokens must be a tensor"):
        head([], grid=(2, 3))


@pytest.mark.parametrize("kind", list(HEADS))
def test_forward_errors(kind: str) -> None:
    head = HEADS[kind]()
    tokens = torch.randn(B, 12, D)
    with pytest.raises(
        ValueError, match=r"tokens must hold h \* w = 9 patch tokens for grid=\(3, 3\).*got 12"
    ):
        head(tokens, grid=(3, 3))
    with pytest.raises(ValueError, match=r"tokens must hold h \* w = 12 .* got 13"):
        head(torch.randn(B, 13, D), grid=(3, 4))  # e.g. a [CLS] token left in
    with pytest.raises(ValueError, match=r"tokens must have width 16 \(B, N, 16\), got \(2, 12, 8\)"):
        head(torch.randn(B, 12, 8), grid=(3, 4))
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, N, 16\)"):
        head(torch.randn(12, D), grid=(3, 4))
    with pytest.raises(ValueError, match=r"grid must be a pair of positive ints \(height, width\), got 12"):
        head(tokens, grid=12)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"size must be a pair of positive ints \(height, width\), got \(0, 4\)"
    ):
        head(tokens, grid=(3, 4), size=(0, 4))
    with pytest.raises(ValueError, match="tokens must hold at least one item"):
        head(torch.randn(0, 12, D), grid=(3, 4))
    with pytest.raises(TypeError, match="tokens must be a floating-point tensor"):
        head(torch.ones(B, 12, D, dtype=torch.long), grid=(3, 4))


def test_constructor_errors() -> None:
    cases = [
        (lambda: LinearSegHead(0, C), ValueError, "dim must be a positive int, got 0"),
        (lambda: LinearSegHead(D, 0), ValueError, "num_classes must be a positive int, got 0"),
        (lambda: ConvSegHead(D, C, kernel_size=4), ValueError, "kernel_size must be odd .* got 4"),
        (lambda: ConvSegHead(D, C, kernel_size=0), ValueError, "kernel_size must be a positive int, got 0"),
        (lambda: ConvSegHead(D, C, hidden_dim=0), ValueError, "hidden_dim must be a positive int, got 0"),
        (lambda: ConvSegHead(D, True), ValueError, "num_classes must be a positive int, got True"),
        (
            lambda: MaskTransformerSegHead(D, 1, heads=2),
            ValueError,
            r"num_classes must be an int >= 2, got 1",
        ),
        (
            lambda: MaskTransformerSegHead(D, C, depth=0, heads=2),
            ValueError,
            "depth must be a positive int, got 0",
        ),
        (lambda: MaskTransformerSegHead(D, C, heads=0), ValueError, "heads must be a positive int, got 0"),
        (
            lambda: MaskTransformerSegHead(D, C, heads=3),
            ValueError,
            r"hidden_dim \(16\) must be divisible by heads",
        ),
        (
            lambda: MaskTransformerSegHead(D, C, heads=2, dim_head=-1),
            ValueError,
            "dim_head must be a positive int",
        ),
        (lambda: MaskTransformerSegHead(D, C, hidden_dim=0), ValueError, "hidden_dim must be a positive int"),
        (
            lambda: MaskTransformerSegHead(D, C, mlp_ratio=0),
            ValueError,
            "mlp_ratio must be a finite positive",
        ),
        (
            lambda: MaskTransformerSegHead(D, C, dropout=1.0),
            ValueError,
            r"dropout must be a number in \[0, 1\)",
        ),
        (lambda: MaskTransformerSegHead(D, C, shared_qk=1), TypeError, "shared_qk must be a bool, got int 1"),
    ]
    for build, error, message in cases:
        with pytest.raises(error, match=message):
            build()
    MaskTransformerSegHead(D, C, heads=3, dim_head=4)  # control: an explicit dim_head needs no divisibility
