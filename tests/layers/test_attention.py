"""Attention: fused and manual paths agree, masks do what they say, KV cache equals recompute, errors are clear."""

from __future__ import annotations

import pytest
import torch

from vlblocks.layers import Attention, KVCache


@pytest.fixture(autouse=True)
def _sdpa_kernel(monkeypatch) -> None:
    """These tests compare SDPA's kernel with the manual path: keep the fused modules on the kernel (the CPU choice
    of two matrix products for few keys is tested in test_attention_math.py)."""
    monkeypatch.setattr(Attention, "_math_is_faster", lambda self, q, k: False)


def _pair(**kwargs) -> tuple[Attention, Attention]:
    fused = Attention(32, heads=4, **kwargs).eval()
    manual = Attention(32, heads=4, fused=False, **kwargs).eval()
    manual.load_state_dict(fused.state_dict())
    return fused, manual


@pytest.mark.parametrize("causal", [False, True])
def test_fused_and_manual_agree_without_masks(causal: bool) -> None:
    fused, manual = _pair(causal=causal)
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(fused(x), manual(x), atol=1e-5, rtol=1e-5)


def test_fused_and_manual_agree_with_padding_and_cross_attention() -> None:
    fused, manual = _pair(dim_context=24)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 6, 24)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    torch.testing.assert_close(fused(x, ctx, mask=mask), manual(x, ctx, mask=mask), atol=1e-5, rtol=1e-5)


def test_fused_and_manual_agree_with_causal_padding_and_float_mask() -> None:
    fused, manual = _pair(causal=True)
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    bias = torch.randn(6, 6)
    torch.testing.assert_close(
        fused(x, mask=mask, attn_mask=bias), manual(x, mask=mask, attn_mask=bias), atol=1e-5, rtol=1e-5
    )


def test_matches_the_definition() -> None:
    """Golden check: softmax(q k^T / sqrt(d)) v with the layer's own projections, heads split by hand."""
    attn = Attention(16, heads=2).eval()
    x = torch.randn(1, 4, 16)
    q, k, v = attn.q(x), attn.k(x), attn.v(x)
    outs = []
    for h in range(2):
        sl = slice(8 * h, 8 * (h + 1))
        w = (q[..., sl] @ k[..., sl].transpose(-1, -2) / 8**0.5).softmax(-1)
        outs.append(w @ v[..., sl])
    expected = attn.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)


def test_padded_keys_are_ignored() -> None:
    attn = Attention(32, heads=4).eval()
    x, ctx = torch.randn(1, 3, 32), torch.randn(1, 5, 32)
    mask = torch.tensor([[True, True, True, False, False]])
    ctx2 = ctx.clone()
    ctx2[:, 3:] = torch.randn(1, 2, 32) * 100
    torch.testing.assert_close(attn(x, ctx, mask=mask), attn(x, ctx2, mask=mask))
    torch.testing.assert_close(attn(x, ctx, mask=mask), attn(x, ctx[:, :3]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_fully_masked_row_is_zero_not_nan(fused: bool) -> None:
    attn = Attention(32, heads=4, fused=fused).eval()
    x = torch.randn(2, 3, 32, requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, True, False]])
    out = attn(x, mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out[0], attn.proj.bias.expand(3, 32)
    )  # zero attention output -> only proj bias
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_kv_cache_matches_full_recompute() -> None:
    attn = Attention(32, heads=4, causal=True).eval()
    x = torch.randn(2, 6, 32)
    full = attn(x)
    cache = KVCache(2, 4, 8, 8)
    prefix = attn(x[:, :3], kv_cache=cache, positions=torch.arange(3))
    steps = [attn(x[:, i : i + 1], kv_cache=cache, positions=torch.tensor([i])) for i in range(3, 6)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_context_kv_reuse_equals_context() -> None:
    attn = Attention(32, heads=4, dim_context=16).eval()
    x, ctx = torch.randn(2, 3, 32), torch.randn(2, 5, 16)
    torch.testing.assert_close(attn(x, context_kv=attn.project_context(ctx)), attn(x, ctx))


def test_attn_probs_hook_captures_probabilities() -> None:
    attn = Attention(32, heads=4, fused=False).eval()
    seen = []
    attn.attn_probs.register_forward_hook(lambda m, i, o: seen.append(o))
    attn(torch.randn(2, 5, 32), torch.randn(2, 7, 32))
    assert seen[0].shape == (2, 4, 5, 7)
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 4, 5))


def test_every_parameter_gets_a_gradient() -> None:
    attn = Attention(32, heads=4, dim_context=8, dropout=0.1)
    attn(torch.randn(2, 3, 32), torch.randn(2, 4, 8)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def _probe(p: float, fused: bool) -> tuple[Attention, torch.Tensor, list[torch.Tensor]]:
    """An attention whose output before `proj` is its (dropped-out) probabilities: uniform 1/8 over 8 one-hot keys.

    q = k = 0 gives uniform probabilities; v is the identity on one-hot context tokens, so `probs @ v` is the
    probabilities themselves. A forward pre-hook on `proj` records them (before the output dropout).
    """
    attn = Attention(8, heads=1, dim_context=8, dropout=p, fused=fused)
    with torch.no_grad():
        for lin in (attn.q, attn.k):
            lin.weight.zero_()
            lin.bias.zero_()
        attn.v.weight.copy_(torch.eye(8))
        attn.v.bias.zero_()
    seen: list[torch.Tensor] = []
    attn.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    context = torch.eye(8).expand(4, 8, 8)  # (B, Nk, Dc) one-hot keys
    return attn, context, seen


@pytest.mark.parametrize("fused", [True, False])
def test_attention_dropout_drops_the_expected_fraction_of_probabilities(fused: bool) -> None:
    attn, context, seen = _probe(0.25, fused)
    attn.train()(torch.randn(4, 256, 8), context)
    probs = seen[-1]  # (B, Nq, Nk) = 8192 probabilities of 1/8, each dropped with p = 0.25
    zero = (probs == 0).float().mean().item()
    assert abs(zero - 0.25) < 0.02, zero  # 4 standard deviations is 0.019
    kept = probs[probs != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, (1 / 8) / 0.75))  # rescaled by 1 / (1 - p)
    attn.eval()(torch.randn(4, 256, 8), context)
    torch.testing.assert_close(seen[-1], torch.full_like(seen[-1], 1 / 8))  # control: eval drops nothing


@pytest.mark.parametrize("fused", [True, False])
def test_attention_dropout_is_seeded_and_off_in_eval(fused: bool) -> None:
    attn = Attention(16, heads=2, dropout=0.3, fused=fused)
    plain = Attention(16, heads=2, dropout=0.0, fused=fused)
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(2, 6, 16)

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return attn.train()(x)

    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)  # same seed, same masks
    assert not torch.allclose(run(1), run(2))  # another seed, other masks
    assert not torch.allclose(run(1), plain.train()(x))  # dropout changes the training output...
    torch.testing.assert_close(attn.eval()(x), plain.eval()(x))  # ...and nothing in eval mode
    torch.testing.assert_close(attn.eval()(x), attn.eval()(x), rtol=0, atol=0)


def test_compiles_without_graph_break() -> None:
    attn = Attention(32, heads=4).eval()
    compiled = torch.compile(attn, fullgraph=True, backend="eager")
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(compiled(x, mask=torch.ones(2, 5, dtype=torch.bool)), attn(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heads": 5}, "divisible by heads"),
        ({"heads": 0}, "heads must be a positive int"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\), got 1.5"),
        # regression (issue 7 item 10): dim_context=0 fell back to dim; heads=True was taken as 1 head
        ({"dim_context": 0}, "dim_context must be a positive int, got 0"),
        ({"heads": True}, "heads must be a positive int, got True"),
        ({"heads": 4, "dim_head": -1}, "dim_head must be a positive int"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Attention(32, **kwargs)


def test_bad_inputs_raise() -> None:
    attn = Attention(32, heads=4, dim_context=16)
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 32\)"):
        attn(torch.randn(2, 3, 31))
    with pytest.raises(ValueError, match=r"context must have shape \(B, N, 16\)"):
        attn(torch.randn(2, 3, 32), torch.randn(2, 3, 32))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        attn(torch.randn(2, 3, 32), torch.randn(2, 4, 16), mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, 4\)"):
        attn(torch.randn(2, 3, 32), torch.randn(2, 4, 16), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="positions"):
        Attention(32, heads=4)(torch.randn(1, 1, 32), kv_cache=KVCache(1, 4, 4, 8))


def _reference(attn: Attention, x: torch.Tensor, ctx: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) masked) v by hand, heads split with plain reshapes."""
    b, nq, _ = x.shape
    nk, h, dh = ctx.shape[1], attn.heads, attn.dim_head
    q = attn.q(x).view(b, nq, h, dh).transpose(1, 2)  # (B, H, Nq, Dh)
    k = attn.k(ctx).view(b, nk, h, dh).transpose(1, 2)  # (B, H, Nk, Dh)
    v = attn.v(ctx).view(b, nk, h, dh).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / dh**0.5
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return attn.proj((probs @ v).transpose(1, 2).reshape(b, nq, h * dh))


@pytest.mark.parametrize("fused", [True, False])
def test_causal_with_fewer_queries_than_keys_aligns_to_the_end(fused: bool) -> None:
    """Causal with Nq < Nk: query i sees keys j <= i + (Nk - Nq) (SDPA's bottom-right convention, a KV prefix)."""
    attn = Attention(16, heads=2, causal=True, fused=fused).eval()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 16)  # Nq = 3 < Nk = 5
    bottom_right = torch.ones(3, 5, dtype=torch.bool).tril(diagonal=2)
    out = attn(x, ctx)
    assert out.shape == (2, 3, 16)
    torch.testing.assert_close(out, _reference(attn, x, ctx, bottom_right), atol=1e-5, rtol=1e-5)
    # control: the top-left alignment (query i sees keys j <= i) is a different function
    top_left = torch.ones(3, 5, dtype=torch.bool).tril()
    assert not torch.allclose(out, _reference(attn, x, ctx, top_left), atol=1e-3)
    # the last query sees every key: it equals non-causal attention there
    free = Attention(16, heads=2, fused=fused).eval()
    free.load_state_dict(attn.state_dict())
    torch.testing.assert_close(out[:, -1], free(x, ctx)[:, -1], atol=1e-5, rtol=1e-5)


def test_causal_mask_path_equals_is_causal_fast_path() -> None:
    attn = Attention(16, heads=2, causal=True, fused=False).eval()
    x = torch.randn(1, 5, 16)
    mask = torch.ones(1, 5, dtype=torch.bool)
    # with an explicit (trivially true) padding mask the tril path runs; must equal the is_causal fast path
    torch.testing.assert_close(attn(x, mask=mask), attn(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_attn_mask_is_refused_not_added(fused: bool, dtype: torch.dtype) -> None:
    """Regression (issue 7 item 5): a 0/1 HF-style mask was added to the scores as a bias, masking nothing."""
    attn = Attention(16, heads=2, fused=fused).eval()
    mask01 = torch.tensor([[1, 1, 0, 0]] * 4, dtype=dtype)
    with pytest.raises(TypeError, match=rf"attn_mask must be a bool tensor .* got dtype {dtype}.*\.bool\(\)"):
        attn(torch.randn(1, 4, 16), attn_mask=mask01)
    attn(torch.randn(1, 4, 16), attn_mask=mask01.bool())  # the documented conversion works


@pytest.mark.parametrize("fused", [True, False])
def test_float_mask_with_a_row_of_minus_inf_gives_zeros_forward_and_backward(fused: bool) -> None:
    """Regression (issue 7 item 6): the manual path gave NaN (forward and backward) for an all -inf row."""
    attn = Attention(16, heads=2, fused=fused).eval()
    x = torch.randn(2, 3, 16, requires_grad=True)
    bias = torch.randn(3, 3)
    bias[1] = float("-inf")  # query 1 sees no key
    bias[2, 0] = float("-inf")  # query 2 does not see key 0
    out = attn(x, attn_mask=bias)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 1], attn.proj.bias.expand(2, 16))  # zero attention output
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(attn.q.weight.grad).all()
    # -inf entries mask exactly like False in a bool mask, the finite entries are a bias on the rest
    allowed = ~torch.isinf(bias)
    expected = _reference(attn, x, x, allowed)  # without bias: differs on rows with a finite bias
    with torch.no_grad():
        out2 = attn(x, attn_mask=bias)
        assert not torch.allclose(out2[:, 0], expected[:, 0], atol=1e-4)  # control: the bias matters
    two = Attention(16, heads=2, fused=not fused).eval()
    two.load_state_dict(attn.state_dict())
    torch.testing.assert_close(two(x, attn_mask=bias), out, atol=1e-5, rtol=1e-5)  # both paths agree


def test_query_index_equals_gathered_queries_forward_and_backward() -> None:
    attn = Attention(32, heads=4, dim_context=16)
    x, ctx = torch.randn(3, 5, 32, requires_grad=True), torch.randn(7, 4, 16)  # 3 distinct query sets, 7 rows
    index = torch.tensor([0, 0, 2, 1, 2, 2, 0])
    mask = torch.ones(7, 4, dtype=torch.bool)
    mask[3, 2:] = False
    out = attn(x, ctx, mask=mask, query_index=index)
    ref = attn(x[index], ctx, mask=mask)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    (g_out,) = torch.autograd.grad(out, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g_out, g_ref)


def test_query_index_errors() -> None:
    attn = Attention(32, heads=4)
    x, ctx = torch.randn(3, 5, 32), torch.randn(4, 6, 32)
    with pytest.raises(ValueError, match="query_index needs a cross-attention"):
        attn(x, query_index=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"query_index must lie in \[0, 3\)"):
        attn(x, ctx, query_index=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"context must have the batch size of the queries \(2\), got 4"):
        attn(x, ctx, query_index=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="query_index"):
        attn(x, ctx, query_index=torch.tensor([0.0, 1.0, 2.0, 0.0]))
