"""generate(cuda_graph=True) without a GPU: the capture is replaced by a tape of the step's aten operations replayed
on the same tensors, which is what a CUDA graph does (no Python runs on replay; the step sees only what the static
buffers hold). Equal tokens to the eager loop (greedy, sampling, beams, both modes), kept caches reused across calls,
in-place weight updates seen, a new parameter recaptured, least recently used shapes dropped, refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.generation import graph
from vlblocks.generation.cache import StaticCache
from vlblocks.generation.graph import release_graphs
from vlblocks.peft import apply_lora, lora_layers, merge_lora, unmerge_lora

V, D, DI, PAD = 300, 32, 24, 0


class _Tape(TorchDispatchMode):
    """Records every aten operation with its arguments and results."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


def _tape_capture(fn, device):
    """Stand-in for `graph._capture`: warm up, record the step's operations once, replay them on the same inputs
    (tensors made inside the step are substituted by their replayed values; the result is copied into the static
    output, as a graph's replay writes its captured output)."""
    fn(), fn()
    tape = _Tape()
    with tape:
        out = fn()
    static = out.clone()
    _tape_capture.captures += 1

    def replay():
        made: dict[int, torch.Tensor] = {}

        def sub(x):
            return made.get(id(x), x) if isinstance(x, torch.Tensor) else x

        for func, args, kwargs, result in tape.ops:
            new = func(*tree_map(sub, args), **tree_map(sub, kwargs))
            for old, value in zip(tree_flatten(result)[0], tree_flatten(new)[0]):
                if isinstance(old, torch.Tensor):
                    made[id(old)] = value
        static.copy_(made.get(id(out), out))

    return replay, static


@pytest.fixture
def taped(monkeypatch):
    monkeypatch.setattr(graph, "_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(graph, "_capture", _tape_capture)
    _tape_capture.captures = 0
    return _tape_capture


def _decoder(mode: str = "cross", seed: int = 0, positions: int = 40) -> GPT2Decoder:
    torch.manual_seed(seed)
    cfg = GPT2DecoderConfig(vocab_size=V, n_positions=positions, n_embd=D, n_layer=2, n_head=4, dim_image=DI,
                            cross_attention=mode == "cross", mode=mode, bos_token_id=1, eos_token_id=None)
    dec = GPT2Decoder(cfg).eval()
    with torch.no_grad():  # wider weights than GPT-2's init: varied tokens rather than the prompt's last one again
        for p in dec.transformer.h.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return dec


def _inputs(batch: int, seed: int, prompt: int = 3, images: int = 5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (batch, prompt), generator=g)
    mask = torch.ones(batch, prompt, dtype=torch.long)
    mask[0, : prompt - 1] = 0  # a left-padded row
    return torch.randn(batch, images, DI, generator=g), ids, mask


CASES = {
    "greedy": dict(),
    "greedy, one row": dict(batch=1),
    "sampling": dict(temperature=0.8, top_k=40, top_p=0.9),
    "penalties and scores": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, output_scores=True),
    "beam search": dict(num_beams=3, length_penalty=0.7),
}


@pytest.mark.parametrize("mode", ["cross", "prefix"])
@pytest.mark.parametrize("case", list(CASES))
def test_replayed_step_equals_eager_loop(taped, mode, case):
    kw = dict(CASES[case])
    batch = kw.pop("batch", 3)
    dec = _decoder(mode)
    for call in range(3):  # the first call captures, the next ones replay on the kept cache with new inputs
        image, ids, mask = _inputs(batch, seed=call)
        args = dict(attention_mask=mask, max_new_tokens=9, pad_token_id=PAD, **kw)
        if batch == 1:
            args.pop("attention_mask")
        free = dec.generate(image, ids, generator=torch.Generator().manual_seed(call), eos_token_id=None, **args)
        args["eos_token_id"] = int(free.sequences[-1, ids.shape[1] + 2])  # the last row ends at its third token
        assert args["eos_token_id"] != PAD
        eager = dec.generate(image, ids, generator=torch.Generator().manual_seed(call), **args)
        graphed = dec.generate(image, ids, generator=torch.Generator().manual_seed(call), cuda_graph=True, **args)
        assert torch.equal(graphed.sequences, eager.sequences), f"call {call}"
        if eager.scores is not None:
            torch.testing.assert_close(graphed.scores, eager.scores)
        assert torch.unique(free.sequences[:, ids.shape[1]:]).numel() > 2  # control: varied tokens
    assert taped.captures == 1


def test_the_tape_replays_like_a_graph(taped):
    """Control for the stand-in: a value the step takes from the host is frozen at capture (as in a CUDA graph), while
    the static inputs are read afresh at every replay."""
    counter = itertools.count()

    def step_fn(decoder, cache, tokens, slot, position):  # (B,) tokens + a host-side counter
        return tokens[:, 0] * 10 + next(counter)

    cache = StaticCache.allocate(batch=2, depth=1, heads=1, dim_head=2, max_len=4)
    step = graph.GraphedStep(step_fn, cache)
    slot, position = torch.zeros(1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)
    tokens = torch.tensor([[1], [2]])
    outs = [step(None, cache, tokens, slot, position).clone() for _ in range(3)]
    assert all(torch.equal(out, torch.tensor([12, 22])) for out in outs)  # eager would count on: 12, 13, 14
    assert torch.equal(step(None, cache, tokens + 1, slot, position), torch.tensor([22, 32]))
    with pytest.raises(RuntimeError, match="the cache it was captured with"):
        step(None, StaticCache.allocate(batch=2, depth=1, heads=1, dim_head=2, max_len=4), tokens, slot, position)


def test_in_place_weight_update_is_seen_and_a_new_parameter_recaptures(taped):
    dec = _decoder()
    image, ids, mask = _inputs(2, seed=1)
    kw = dict(attention_mask=mask, max_new_tokens=7, cuda_graph=True)
    dec.generate(image, ids, **kw)
    with torch.no_grad():  # an optimizer step / LoRA merge: the same tensors, new values
        for p in dec.transformer.h[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected = dec.generate(image, ids, attention_mask=mask, max_new_tokens=7)
    assert torch.equal(dec.generate(image, ids, **kw).sequences, expected.sequences)
    assert taped.captures == 1
    dec.transformer.ln_f = torch.nn.LayerNorm(D)  # a new parameter: a new key, a new capture
    expected = dec.generate(image, ids, attention_mask=mask, max_new_tokens=7)
    assert torch.equal(dec.generate(image, ids, **kw).sequences, expected.sequences)
    assert taped.captures == 2


def test_lora_merge_recaptures(taped):
    """Merging changes the weights in place AND the Python branch (no delta any more): the old capture would add
    the delta twice, so the module flags are part of the key."""
    dec = _decoder()
    apply_lora(dec, ["c_attn", "c_fc"], r=4, alpha=8)
    with torch.no_grad():
        for _, layer in lora_layers(dec):
            layer.lora_B.normal_(0.0, 0.5)  # a delta that changes the tokens
    image, ids, mask = _inputs(2, seed=2)
    kw = dict(attention_mask=mask, max_new_tokens=7)
    before = dec.generate(image, ids, **kw)
    assert torch.equal(dec.generate(image, ids, cuda_graph=True, **kw).sequences, before.sequences)
    merge_lora(dec)
    merged = dec.generate(image, ids, **kw)
    assert torch.equal(dec.generate(image, ids, cuda_graph=True, **kw).sequences, merged.sequences)
    assert taped.captures == 2
    unmerge_lora(dec)
    with torch.no_grad():
        for _, layer in lora_layers(dec):
            layer.lora_B.zero_()
    # control: the delta changes the tokens, so a capture that added it twice would be seen
    assert not torch.equal(dec.generate(image, ids, **kw).sequences, before.sequences)


def test_lengths_that_round_alike_share_one_capture(taped):
    """The kept cache has prompt + new tokens rounded up to `SLOT_ROUND` slots: other `max_new_tokens` replay the same
    capture (the longer call first, so the shorter one runs over stale slots, which must stay hidden)."""
    dec = _decoder(positions=graph.SLOT_ROUND + 8)
    image, ids, mask = _inputs(2, seed=4)
    for new in (20, 6, 13, graph.SLOT_ROUND):  # 3 + 20, 3 + 6, 3 + 13 slots round to SLOT_ROUND; 3 + 64 to twice it
        eager = dec.generate(image, ids, attention_mask=mask, max_new_tokens=new)
        graphed = dec.generate(image, ids, attention_mask=mask, max_new_tokens=new, cuda_graph=True)
        assert torch.equal(graphed.sequences, eager.sequences), new
        if new == 13:
            assert taped.captures == 1
            (step,) = graph._KEPT[dec].values()
            assert step.cache.max_len == graph.SLOT_ROUND and not step.cache.key_mask[:, 3 + 13 :].any()
    assert taped.captures == 2
    assert [s.cache.max_len for s in graph._KEPT[dec].values()] == [graph.SLOT_ROUND, 2 * graph.SLOT_ROUND]


def test_load_into_a_longer_cache():
    live = StaticCache.allocate(batch=2, depth=1, heads=1, dim_head=2, max_len=3)
    live.layers[0].k.normal_()
    live.key_mask[0, 0] = False
    kept = StaticCache.allocate(batch=4, depth=1, heads=1, dim_head=2, max_len=5)
    kept.load_(live, repeat=2)
    assert torch.equal(kept.layers[0].k[:, :, :3], live.layers[0].k.repeat_interleave(2, dim=0))
    assert kept.key_mask.tolist() == [[False, True, True, False, False]] * 2 + [[True, True, True, False, False]] * 2
    with pytest.raises(ValueError, match="5 slots into one of 3"):
        live.load_(kept)


def test_kept_shapes_are_bounded_and_released(taped):
    dec = _decoder()
    for batch in range(1, graph.MAX_KEPT + 3):
        image, ids, _ = _inputs(batch, seed=batch)
        dec.generate(image, ids, max_new_tokens=4, cuda_graph=True)
    assert len(graph._KEPT[dec]) == graph.MAX_KEPT
    image, ids, _ = _inputs(1, seed=1)  # batch 1 was dropped (least recently used): captured again
    dec.generate(image, ids, max_new_tokens=4, cuda_graph=True)
    assert taped.captures == graph.MAX_KEPT + 3
    release_graphs(dec)
    assert dec not in graph._KEPT


def test_refusals():
    dec = _decoder()
    image, ids, _ = _inputs(2, seed=0)
    with pytest.raises(ValueError, match="CUDA device, got device 'cpu'"):
        dec.generate(image, ids, max_new_tokens=3, cuda_graph=True)


def test_refusals_on_a_capturing_device(taped):
    dec = _decoder()
    image, ids, _ = _inputs(2, seed=0)
    with pytest.raises(ValueError, match="return_cross_attentions"):
        dec.generate(image, ids, max_new_tokens=3, cuda_graph=True, return_cross_attentions=[0])
    dec.train()
    with pytest.raises(ValueError, match="eval mode.*training=True"):
        dec.generate(image, ids, max_new_tokens=3, cuda_graph=True)
    dec.eval()
    handle = dec.transformer.h[0].register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match="no hooks"):
        dec.generate(image, ids, max_new_tokens=3, cuda_graph=True)
    handle.remove()
    assert taped.captures == 0
