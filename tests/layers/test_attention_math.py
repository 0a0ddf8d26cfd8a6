"""Attention on CPU with few keys: two matrix products and a softmax instead of SDPA's kernel, same results."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlblocks.layers import Attention


def _kernel_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[1].shape[-2])  # keys
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    return calls


@pytest.mark.parametrize(
    ("keys", "grad", "kernel"),
    [(16, False, False), (16, True, False), (64, True, False), (64, False, True), (96, True, True)],
)
def test_the_path_follows_the_number_of_keys_and_autograd(
    monkeypatch, keys: int, grad: bool, kernel: bool
) -> None:
    calls = _kernel_calls(monkeypatch)
    attn = Attention(32, heads=4).train()
    x, ctx = torch.randn(2, 5, 32, requires_grad=grad), torch.randn(2, keys, 32)
    with torch.set_grad_enabled(grad):
        attn(x, ctx)
    assert calls == ([keys] if kernel else [])


def test_attention_dropout_in_training_keeps_the_kernel(monkeypatch) -> None:
    calls = _kernel_calls(monkeypatch)
    attn = Attention(32, heads=4, dropout=0.1)
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 8, 32)
    attn.train()(x, ctx)
    attn.eval()(x, ctx)
    assert calls == [8]  # training with dropout: the kernel's dropout; eval: no dropout, the two products


@pytest.mark.parametrize("case", ["padding", "causal", "float_mask", "dead_row"])
def test_equals_the_kernel_forward_and_backward(monkeypatch, case: str) -> None:
    torch.manual_seed(0)
    attn = Attention(32, heads=4, causal=case == "causal").train()
    x = torch.randn(3, 6, 32, requires_grad=True)
    ctx = None if case == "causal" else torch.randn(3, 9, 32, requires_grad=True)
    kwargs: dict = {}
    if case in ("padding", "dead_row"):
        mask = torch.ones(3, 9, dtype=torch.bool)
        mask[1, 4:] = False
        if case == "dead_row":
            mask[2] = False  # no visible key: zeros, not NaN
        kwargs["mask"] = mask
    if case == "float_mask":
        kwargs["attn_mask"] = torch.randn(6, 9)
    inputs = [t for t in (x, ctx) if t is not None] + list(attn.parameters())
    out = attn(x, ctx, **kwargs)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    monkeypatch.setattr(Attention, "_math_is_faster", lambda self, q, k: False)
    ref = attn(x, ctx, **kwargs)
    ref_grads = torch.autograd.grad(ref.square().sum(), inputs)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_the_probabilities_hook_is_only_for_the_manual_path() -> None:
    attn = Attention(32, heads=4).eval()
    seen: list[tuple[int, ...]] = []
    attn.attn_probs.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    attn(x, ctx)  # fused (here: the two products) calls no hook, as the kernel would not
    assert seen == []
    attn.fused = False
    attn(x, ctx)
    assert seen == [(2, 4, 5, 7)]
