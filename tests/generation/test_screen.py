"""`GreedyHead` (greedy's int8 / bfloat16 screen of the LM head, checked in float32) against the float32 argmax, its bound,
its fallback; `generate` with it against HF; `output_scores` against HF's transition scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlblocks.decoders import GPT2Decoder
from vlblocks.generation import screen
from vlblocks.generation.screen import GreedyHead

pytestmark = pytest.mark.skipif(screen.screen_kind() is None, reason="neither an int8 nor a bfloat16 CPU kernel")

V, D = 5000, 64
_NO_INT8 = pytest.mark.skipif(not screen._int8_available(), reason="no int8 VNNI kernel")
KINDS = [
    pytest.param("int8", marks=_NO_INT8),  # the prepacked oneDNN product (where it runs)
    pytest.param("int8-mm", marks=_NO_INT8),  # torch._int_mm (many rows)
    pytest.param("bf16", marks=pytest.mark.skipif(not screen._bf16_available(), reason="no bfloat16 kernel")),
]


@pytest.fixture
def make(monkeypatch):
    """make(weight, rows, kind) -> a GreedyHead on that kernel ("int8-mm": torch._int_mm at any number of rows)."""

    def build(weight: torch.Tensor, rows: int, kind: str) -> GreedyHead:
        monkeypatch.setattr(screen, "_PREPACK_ROWS", 0 if kind == "int8-mm" else 10**6)
        head = GreedyHead(weight, rows, kind.removesuffix("-mm"))
        assert isinstance(head.packed, tuple) == (kind == "int8" and screen._prepack_available())
        return head

    return build


def _head(std: float = 0.02) -> nn.Linear:
    torch.manual_seed(0)
    lin = nn.Linear(D, V, bias=False)
    nn.init.normal_(lin.weight, std=std)
    return lin


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1.0, 40.0, 1e-3])
def test_equals_float32_argmax_and_decides_most_rows(make, kind, scale):
    lin = _head()
    head = make(lin.weight, 64, kind)
    h = F.layer_norm(torch.randn(64, D, generator=torch.Generator().manual_seed(1)), (D,)) * scale
    assert torch.equal(head(h), F.linear(h, lin.weight).argmax(dim=-1))
    _, certain = head.screen(h)
    assert certain.float().mean() > 0.9  # control: the screen, not the fallback, decides


@pytest.mark.parametrize("kind", KINDS)
def test_bound_holds_for_every_token(make, kind):
    lin = _head(std=0.3)
    with torch.no_grad():
        lin.weight[7] *= 20  # an outlier row: the int8 scale is per tensor
    head = make(lin.weight, 8, kind)
    h = torch.randn(8, D) * torch.logspace(-12, 12, 8)[:, None]
    h[1, :5] *= 1e4  # an outlier coordinate: the int8 scale is per row
    a, bound = head.values(h)  # (B, V) float64 each
    z = h.double() @ lin.weight.double().t()  # exact enough
    err = (z - a).abs()
    assert (err <= bound).all()
    assert (err.amax(dim=-1) > 0.01 * bound.amax(dim=-1)).all()  # control: not vacuous (loosened by the outliers)


@pytest.mark.parametrize("kind", KINDS)
def test_undecidable_rows_fall_back_and_ties_take_the_first(make, kind):
    lin = _head()
    with torch.no_grad():
        lin.weight[4000] = lin.weight[123]  # two equal rows: exact ties
    head = make(lin.weight, 6, kind)
    h = torch.randn(6, D)
    h[1] = 0.0  # every logit 0: the first token
    h[2, 0] = float("nan")
    h[3] = lin.weight[123].detach() * 100  # 123 and 4000 tie among the candidates: the first one
    h[4, 3] = float("inf")
    h[5] = 1e-42  # denormal: the screen's scale underflows
    _, certain = head.screen(h)
    assert certain.tolist()[1:3] == [False, False] and not certain[4]
    got, ref = head(h), F.linear(h, lin.weight).argmax(dim=-1)
    assert torch.equal(got, ref) and got[1] == 0 and got[3] == 123


@pytest.mark.parametrize("kind", KINDS)
def test_close_logits_are_resolved_in_float32(make, kind):
    lin = _head()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for i in range(20):  # 20 near copies of row 55: more close candidates than the screen keeps
            lin.weight[300 + 97 * i] = lin.weight[55] + 1e-5 * torch.randn(D, generator=g)
    head = make(lin.weight, 6, kind)
    h = torch.randn(6, D, generator=g)
    h[::2] = lin.weight[55].detach() * 50
    _, certain = head.screen(h)
    assert not certain[::2].any()
    assert torch.equal(head(h), F.linear(h, lin.weight).argmax(dim=-1))


@_NO_INT8
@pytest.mark.parametrize("rows", [24, 29, 32])
def test_vocabulary_major_product_equals_row_major(make, monkeypatch, rows):
    """From 24 to 32 rows `_int_mm` runs as (Vp, D) x (D, 32) on rows padded with zeros: the same screen, the same
    candidates and tokens as the row-major product (B, D) x (D, Vp)."""
    lin = _head()
    h = F.layer_norm(torch.randn(rows, D, generator=torch.Generator().manual_seed(5)), (D,))
    head = make(lin.weight, rows, "int8-mm")
    screen_vm, kept_vm = head._product(h)[0], head._kept_chunks(head._product(h)[0])
    assert screen_vm.shape[0] == 32 and screen_vm.stride(-1) != 1  # control: the padded vocabulary-major path
    got = (head(h), head.values(h))
    monkeypatch.setattr(screen, "_VOCAB_MAJOR_ROWS", 0)
    screen_rm = head._product(h)[0]
    assert screen_rm.shape[0] == rows and screen_rm.stride(-1) == 1
    assert torch.equal(screen_vm[:rows], screen_rm) and not screen_vm[rows:, :V].any()
    for a, b in zip(kept_vm, head._kept_chunks(screen_rm)):
        assert torch.equal(a[:rows], b)
    assert torch.equal(got[0], head(h)) and torch.equal(got[0], F.linear(h, lin.weight).argmax(dim=-1))
    assert all(torch.equal(a, b) for a, b in zip(got[1], head.values(h)))


@pytest.mark.skipif(not (screen._int8_available() and screen._bf16_available()), reason="int8 and bfloat16")
def test_a_loose_int8_bound_switches_to_bf16():
    lin = _head()
    with torch.no_grad():
        lin.weight[9, 0] = 30.0  # one huge weight: the per-tensor int8 scale leaves the other rows ~2 levels
    head = GreedyHead(lin.weight, 16, "int8")
    h = F.layer_norm(torch.randn(48, D, generator=torch.Generator().manual_seed(4)), (D,))
    for rows in h.split(16):
        assert torch.equal(head(rows), F.linear(rows, lin.weight).argmax(dim=-1))
    assert head.kind == "bf16" and head.unsure > 0.05 * 32
    assert GreedyHead.build(lin, 16).kind == "bf16"  # remembered for this weight (until it changes)
    tight = GreedyHead(_head().weight, 32, "int8")  # control: a tight bound stays on int8
    tight(h[:32])
    assert tight.kind == "int8"


def test_where_it_applies(monkeypatch):
    assert GreedyHead.build(_head(), 1) is None  # one row of a small head: the float32 product on the transposed copy
    monkeypatch.setattr(screen, "_MIN_ONE_ROW_ELEMENTS", V * D)  # a head as large as the one-row threshold
    one = GreedyHead.build(_head(), 1)
    assert one is not None
    h = torch.randn(40, D, generator=torch.Generator().manual_seed(3))
    got = torch.cat([one(row[None]) for row in h])  # one row at a time, as batch-1 decoding calls it
    torch.testing.assert_close(got, F.linear(h, _head().weight).argmax(dim=-1), rtol=0, atol=0)
    assert GreedyHead.build(nn.Linear(D, 100, bias=False), 4) is None  # small vocabulary
    assert GreedyHead.build(nn.Linear(D, V), 4) is None  # a bias
    lin = _head()
    lin.register_forward_hook(lambda *a: None)
    assert GreedyHead.build(lin, 4) is None
    head = GreedyHead.build(_head(), 4)
    assert head is not None and head.kind == screen.screen_kind()
    assert screen.screen_kind() == ("int8" if screen._int8_available() else "bf16")
    with pytest.raises(ValueError, match="kind"):
        GreedyHead(_head().weight, 4, "fp8")


@pytest.mark.parametrize("kind", KINDS)
def test_weight_update_rebuilds_the_copy(make, kind):
    lin = _head()
    h = torch.randn(4, D)
    make(lin.weight, 4, kind)(h)
    with torch.no_grad():
        lin.weight.mul_(-3.0)  # bumps the version counter (and changes the int8 scale)
    assert torch.equal(make(lin.weight, 4, kind)(h), F.linear(h, lin.weight).argmax(dim=-1))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
                                  eos_token_id=2, add_cross_attention=True)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    folder = tmp_path_factory.mktemp("gpt2_wide")
    hf.save_pretrained(folder)
    return hf, GPT2Decoder.from_pretrained(folder).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_generate_greedy_equals_hf_through_the_screen(models, monkeypatch, kind):
    import transformers

    hf, ours = models
    monkeypatch.setattr(screen, "_PREPACK_ROWS", 0 if kind == "int8-mm" else 10**6)
    kind = kind.removesuffix("-mm")
    monkeypatch.setitem(screen._KIND, "kind", kind)
    calls = []
    original = GreedyHead.__call__
    monkeypatch.setattr(GreedyHead, "__call__", lambda self, h: calls.append((h.shape[0], self.kind)) or original(self, h))
    ids, image = torch.randint(3, V, (6, 3)), torch.randn(6, 7, 32)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    out = ours.generate(image, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0)
    assert calls == [(6, kind)] * 8 and out.scores is None  # prefill + 7 steps, through the screen; no scores asked
    with torch.no_grad():
        expected = hf.generate(ids, attention_mask=mask, encoder_hidden_states=image,
                               generation_config=transformers.GenerationConfig(max_new_tokens=8, do_sample=False,
                                                                               eos_token_id=2, pad_token_id=0))
    n = expected.shape[1]
    assert torch.equal(out.sequences[:, :n], expected) and (out.sequences[:, n:] == 0).all()
    plain = ours.generate(image, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=2, pad_token_id=0,
                          output_scores=True)
    assert calls == [(6, kind)] * 8 and torch.equal(plain.sequences, out.sequences)  # scores asked: the float32 head


def test_output_scores_equal_hf_transition_scores(models):
    import transformers

    hf, ours = models
    ids, image = torch.randint(3, V, (3, 2)), torch.randn(3, 7, 32)
    for kw, hf_kw in ((dict(), dict(do_sample=False)), (dict(repetition_penalty=1.3), dict(repetition_penalty=1.3))):
        out = ours.generate(image, ids, max_new_tokens=6, eos_token_id=None, output_scores=True, **kw)
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=image,
                              generation_config=transformers.GenerationConfig(
                                  max_new_tokens=6, eos_token_id=None, pad_token_id=0, output_scores=True,
                                  return_dict_in_generate=True, **hf_kw))
        assert torch.equal(out.sequences, ref.sequences)
        steps = hf.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=True)  # (B, T) log-probs
        torch.testing.assert_close(out.scores, steps.sum(dim=1), atol=1e-4, rtol=1e-4)
