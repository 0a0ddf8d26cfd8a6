"""The lean decode step (`FastStep`) against `decode_step`, its weight copies and fallbacks; `greedy_token` against
argmax."""

from __future__ import annotations

import pytest
import torch

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.generation import fast
from vlblocks.generation.fast import FastStep
from vlblocks.generation.sampling import greedy_token
from vlblocks.generation.search import decode_step, prefill, prepare
from vlblocks.peft import apply_lora

V, D = 37, 32


@pytest.fixture
def decoder():
    torch.manual_seed(0)
    dec = GPT2Decoder(GPT2DecoderConfig(vocab_size=V, n_positions=24, n_embd=D, n_layer=2, n_head=4,
                                        cross_attention=True, bos_token_id=1, eos_token_id=2))
    with torch.no_grad():
        for p in dec.parameters():  # no zero-initialised projection: every path changes the logits
            p.add_(torch.randn_like(p) * 0.1)
    return dec.eval()


@pytest.fixture
def relayout(monkeypatch):
    """Re-lay out every float32 linear (the tiny weights are below the size where `generate` bothers)."""
    monkeypatch.setattr(fast, "_PACK_MIN_ELEMENTS", 0)
    fast.clear_weight_cache()
    yield
    fast.clear_weight_cache()


def _steps(dec, step_fn, rows: int, steps: int = 3) -> torch.Tensor:
    """Logits (steps, B, V) of `step_fn` fed the greedy tokens, from a fresh prefill of the same prompt."""
    g = torch.Generator().manual_seed(rows)
    image, ids = torch.randn(rows, 5, D, generator=g), torch.randint(3, V, (rows, 3), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 0] = False  # a left-padded row
    out = []
    with torch.no_grad():
        prompt = prepare(dec, image, ids, mask, steps + 1)
        cache, logits, pos = prefill(dec, prompt)
        slot = torch.tensor([3])
        for _ in range(steps):
            pos = pos + 1
            logits = step_fn(dec, cache, logits.argmax(-1, keepdim=True), slot, pos)
            out.append(logits)
            slot += 1
    return torch.stack(out)


@pytest.mark.parametrize("rows", [1, 3])  # one row: transposed weights; more: oneDNN-packed (where available)
def test_fast_step_equals_decode_step(decoder, relayout, rows):
    expected = _steps(decoder, decode_step, rows)
    step = FastStep.build(decoder, rows)
    got = _steps(decoder, step, rows)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(fast._CACHE) >= 5  # control: the re-laid-out copies were used (lm_head + 2 x (c_attn, ...))
    assert not torch.allclose(expected[0], expected[1])  # the steps differ: the cache is read


@pytest.fixture
def threads():
    """Set the intra-op thread count for one test (restored after)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_fast_step_splits_one_row_across_threads(decoder, relayout, threads, monkeypatch):
    """At one row with 2 threads every linear whose output rows split evenly runs as a batched product over slices
    of a view of its weight; the step still equals `decode_step`."""
    threads(2)
    monkeypatch.setattr(fast, "_MIN_PART_ROWS", 8)  # the tiny decoder's 32..128-row outputs split in 2
    expected = _steps(decoder, decode_step, 1)
    torch.testing.assert_close(_steps(decoder, FastStep.build(decoder, 1), 1), expected, atol=1e-5, rtol=1e-5)
    assert set(fast._CACHE) == {id(decoder.lm_head.weight)}  # control: only the 37-row head (odd) was copied


@pytest.mark.parametrize("out", [512, 384, 256, 257])
@pytest.mark.parametrize("bias", [True, False])
def test_one_row_split_equals_the_linear(relayout, threads, out, bias):
    """`fast_linear` at one row with 4 threads: 4 slices of 128 rows (512), 3 (384), 2 (256); a prime row count
    (257) cannot be cut evenly and keeps the whole product. A view: a later in-place update is seen."""
    threads(4)
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, out, bias=bias)
    x = torch.randn(1, 64)
    assert fast._split_parts(out) == {512: 4, 384: 3, 256: 2, 257: 1}[out]
    f = fast.fast_linear(lin, 1)
    torch.testing.assert_close(f(x), lin(x))
    assert (id(lin.weight) in fast._CACHE) == (out == 257)  # control: a split copies nothing, 257 is transposed
    with torch.no_grad():
        lin.weight.mul_(-2.0)
    torch.testing.assert_close(f(x) if out != 257 else fast.fast_linear(lin, 1)(x), lin(x))
    fast.clear_weight_cache()
    threads(1)
    assert fast._split_parts(out) == 1  # one thread: never split


def test_weight_update_rebuilds_the_copy(decoder, relayout):
    _steps(decoder, FastStep.build(decoder, 2), 2)  # caches copies of the current weights
    with torch.no_grad():
        decoder.lm_head.weight.mul_(-1.0)  # bumps the version counter, as an optimizer step does
        decoder.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    torch.testing.assert_close(_steps(decoder, FastStep.build(decoder, 2), 2), _steps(decoder, decode_step, 2),
                               atol=1e-5, rtol=1e-5)


def test_lora_layers_keep_their_delta(decoder, relayout):
    apply_lora(decoder, ["c_attn", "q_attn", "c_fc"], r=4, alpha=8)
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if "lora_B" in name:
                p.normal_()
    step = FastStep.build(decoder, 2)
    assert step.layers[0].c_attn is decoder.transformer.h[0].attn.c_attn  # a LoRA layer is called as a module
    torch.testing.assert_close(_steps(decoder, step, 2), _steps(decoder, decode_step, 2), atol=1e-5, rtol=1e-5)


def test_build_falls_back_where_only_decode_step_is_faithful(decoder):
    assert FastStep.build(decoder, 2) is not None
    assert FastStep.build(decoder.train(), 2) is None  # dropout
    decoder.eval()
    handle = decoder.transformer.h[1].mlp.register_forward_hook(lambda *a: None)
    assert FastStep.build(decoder, 2) is None  # a hook must see its module run
    handle.remove()
    decoder.transformer.h[0].crossattention.fused = False  # a recorded (manual) attention
    assert FastStep.build(decoder, 2) is None


def test_greedy_token_equals_argmax_over_a_wide_vocabulary():
    torch.manual_seed(0)
    v = 50257  # 196 chunks of 256 and a tail of 81
    logits = torch.randn(6, v)
    logits[0, [300, 9000]] = 9.0  # a tie across chunks: the first wins
    logits[1, [5, 6]] = 9.0  # a tie inside a chunk
    logits[2, v - 3] = 9.0  # the maximum in the tail
    logits[3, [700, v - 1]] = 9.0  # a tie between a chunk and the tail
    logits[4] = 0.0  # all equal: token 0
    logits[5, v - 81] = 9.0  # the first tail token
    assert torch.equal(greedy_token(logits), logits.argmax(-1))
    assert greedy_token(logits).tolist() == [300, 5, v - 3, 700, 0, v - 81]  # control: argmax's own choices
    narrow = torch.randn(3, 100)  # below 16 chunks: plain argmax
    assert torch.equal(greedy_token(narrow), narrow.argmax(-1))


def test_one_row_relays_out_only_widening_linears(relayout):
    """At one row the (in, out) copy is used where out >= in; a narrowing linear (GPT-2's MLP output projection)
    keeps MKL's product on the (out, in) weight, which streams it faster there (docs/generation.md)."""
    torch.manual_seed(0)
    wide, narrow = torch.nn.Linear(8, 32), torch.nn.Linear(32, 8)
    x, y = torch.randn(1, 8), torch.randn(1, 32)
    torch.testing.assert_close(fast.fast_linear(wide, 1)(x), wide(x))
    torch.testing.assert_close(fast.fast_linear(narrow, 1)(y), narrow(y))
    assert id(wide.weight) in fast._CACHE and id(narrow.weight) not in fast._CACHE
    fast.fast_linear(narrow, 3)  # more rows: re-laid out whatever the shape
    assert id(narrow.weight) in fast._CACHE
