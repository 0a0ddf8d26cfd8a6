"""`generate` never waits for the device, checked without a GPU: the whole call runs on the meta device.

A meta tensor has a shape and no data, so everything that would make the host wait for a GPU raises there instead:
`.item()`, `bool(tensor)`, `.tolist()`, `.cpu()`, `nonzero`, boolean-mask indexing, `torch.equal`, `unique`,
`bincount`, `repeat_interleave` without an output size, and mixing in a CPU tensor built on the host (tested below as
the control). What meta allows and a GPU would still pay for is watched by two modes: a tensor built from host data
on the device (`torch.tensor(data, device=...)`), a copy between devices, and `torch.multinomial`. With a GPU, the same loop runs under
`torch.cuda.set_sync_debug_mode("error")` (`benchmarks/bench_generate.py --device cuda` runs each configuration so before timing it).

Not covered here: `check_every > 0`, whose non-blocking copy of the "all finished" flag to host memory is the one
device -> host transfer by design (read only once its CUDA event has completed).
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.generation import graph, search

META = torch.device("meta")


class _HostData(TorchFunctionMode):
    """Records tensors built from host data straight on a device (`torch.tensor(data, device=...)`), which the
    dispatch mode below does not see: an upload a GPU would wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = torch.device(kwargs.get("device") or "cpu")
        if func in (torch.tensor, torch.as_tensor) and device.type != "cpu":
            data = args[0] if args else kwargs.get("data")
            if not (isinstance(data, torch.Tensor) and data.device == device):  # already there: nothing moves
                self.seen.append(f"{func.__name__}(device={device})")
        return func(*args, **kwargs)


class _HostTraffic(TorchDispatchMode):
    """Records the operations meta lets through that a GPU would pay for: copies between devices, multinomial."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name == "multinomial":
            self.seen.append(name)
        out = func(*args, **kwargs)
        if name in ("_to_copy", "copy_", "copy"):
            devices = {t.device for t in (*args, *kwargs.values(), out) if isinstance(t, torch.Tensor) and t.dim()}
            if len(devices) > 1:
                self.seen.append(f"{name} {sorted(str(d) for d in devices)}")
        return out


def _decoder(mode: str) -> GPT2Decoder:
    torch.manual_seed(0)
    cfg = GPT2DecoderConfig(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4, dim_image=24,
                            cross_attention=mode == "cross", mode=mode, bos_token_id=1, eos_token_id=2)
    return GPT2Decoder(cfg).eval().to(META)


def _rows(*values: float) -> torch.Tensor:
    return torch.tensor(values, device=META)  # (B,) per-row sampling parameters, already on the device


CASES = {
    "greedy": dict(),
    "sampling": dict(temperature=0.7, top_k=50, top_p=0.9, min_p=0.05),
    "top-p alone": dict(top_p=0.9),
    "per-row parameters": dict(temperature=_rows(0.0, 0.8), top_k=_rows(0, 20), top_p=_rows(1.0, 0.9),
                               min_p=_rows(0.0, 0.1)),
    "penalties": dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
    "scores": dict(temperature=0.5, output_scores=True),
    "beam search": dict(num_beams=3, length_penalty=0.8),
}


def _generate(dec: GPT2Decoder, **kwargs):
    image = torch.randn(2, 5, 24, device=META)
    ids = torch.ones(2, 3, dtype=torch.long, device=META)
    mask = torch.ones(2, 3, dtype=torch.bool, device=META)  # a left-padded batch's mask (values unread on meta)
    data, traffic = _HostData(), _HostTraffic()
    with data, traffic:
        out = dec.generate(image, ids, attention_mask=mask, max_new_tokens=5, pad_token_id=0, eos_token_id=2, **kwargs)
    return out, data.seen + traffic.seen


@pytest.mark.parametrize("mode", ["cross", "prefix"])
@pytest.mark.parametrize("case", list(CASES))
def test_generate_never_reads_the_device(mode, case):
    out, seen = _generate(_decoder(mode), **CASES[case])
    assert out.sequences.shape == (2, 3 + 5) and out.sequences.device == META
    assert seen == []


def test_cross_attention_maps_never_read_the_device():
    out, seen = _generate(_decoder("cross"), return_cross_attentions=[0, 1])
    assert {k: tuple(v.shape) for k, v in out.cross_attentions.items()} == {0: (2, 5, 4, 5), 1: (2, 5, 4, 5)}
    assert seen == []


@pytest.mark.parametrize("case", ["greedy", "sampling", "beam search"])
def test_cuda_graph_generate_never_reads_the_device(monkeypatch, case):
    """The kept-cache path of `cuda_graph=True` (load the prefill into the kept cache, copy each step's inputs into
    the static ones), with the capture replaced by a plain call writing the static output."""

    def capture(fn, device):
        out = fn()
        return (lambda: out.copy_(fn())), out

    monkeypatch.setattr(graph, "_DEVICES", ("meta",))
    monkeypatch.setattr(graph, "_capture", capture)
    dec = _decoder("cross")
    for _ in range(2):  # the second call reuses the kept cache
        out, seen = _generate(dec, cuda_graph=True, **CASES[case])
        assert out.sequences.shape == (2, 3 + 5) and seen == []
    assert len(graph._KEPT[dec]) == 1


def test_the_check_catches_a_sync(monkeypatch):
    """Control: a loop that read a token on the host, drew with multinomial or sent host data would be caught."""
    dec = _decoder("cross")
    real = search.sample_next_token

    def reads(logits, **kw):
        token = real(logits, **kw)
        int(token[0])  # .item(): a host read
        return token

    monkeypatch.setattr(search, "sample_next_token", reads)
    with pytest.raises((RuntimeError, NotImplementedError)):
        _generate(dec, temperature=0.7)

    def builds(logits, **kw):
        return real(logits, **kw) + torch.tensor([0, 0], device=META)  # host data uploaded as it is built

    monkeypatch.setattr(search, "sample_next_token", builds)
    assert _generate(dec, temperature=0.7)[1] == ["tensor(device=meta)"] * 5

    def sends(logits, **kw):
        return real(logits, **kw) + torch.zeros(2, dtype=torch.long).to(META)  # a host tensor copied over

    monkeypatch.setattr(search, "sample_next_token", sends)
    assert _generate(dec, temperature=0.7)[1] == ["_to_copy ['cpu', 'meta']"] * 5

    def draws(logits, **kw):
        return torch.multinomial(logits.softmax(-1), 1)[:, 0]

    monkeypatch.setattr(search, "sample_next_token", draws)
    assert "multinomial" in _generate(dec, temperature=0.7)[1]
