"""Device check of `generate` on a GPU: what only a GPU can show, in one short run (no timing; bench_generate times).

1. Greedy tokens equal HF's `generate` on the same weights (tiny GPT-2 with cross-attention over 197 image tokens).
2. `cuda_graph=True` gives the eager loop's tokens, over three calls with new inputs (one capture per shape):
   greedy, sampling (numbers and per-row tensors), penalties with scores, beam search, prefix mode, and with
   `compile_step=True` (the compiled step captured).
3. Every configuration above, and `check_every=4`, runs a whole warm `generate` under
   `torch.cuda.set_sync_debug_mode("error")`: any host sync raises.
4. Three `max_new_tokens` whose cache lengths round to one `SLOT_ROUND` band replay one capture.

Prints one line per check and exits 1 if any failed. On CPU (`--device cpu`, for a dry run of the script) only the
eager parts run.

    python benchmarks/check_cuda_generate.py                 # on a GPU machine
    python benchmarks/check_cuda_generate.py --no-compile    # skip the torch.compile case (slow first compile)

Shapes: B rows, Ni = 197 image tokens, D width.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from collections.abc import Callable

import torch

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig

__all__ = ["main"]

B, NI, NEW = 4, 197, 12


def _hf_pair(device: torch.device):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_positions=64, n_layer=2, n_embd=128, n_head=2, add_cross_attention=True)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT2Decoder.from_pretrained(folder).eval()
    return hf.to(device), ours.to(device)


def _prefix_decoder(device: torch.device) -> GPT2Decoder:
    torch.manual_seed(1)
    cfg = GPT2DecoderConfig(vocab_size=1000, n_positions=64, n_embd=128, n_layer=2, n_head=2, dim_image=96,
                            mode="prefix", bos_token_id=1, eos_token_id=None)
    return GPT2Decoder(cfg).eval().to(device)


def _configs(device: torch.device) -> dict[str, dict]:
    rows = dict(temperature=torch.tensor([0.0, 0.7, 1.0, 1.3], device=device),
                top_p=torch.tensor([1.0, 0.9, 0.8, 0.95], device=device))
    return {
        "greedy": dict(),
        "sampling": dict(temperature=0.8, top_k=50, top_p=0.9),
        "top-p alone": dict(top_p=0.9),
        "per-row sampling": rows,
        "penalties + scores": dict(repetition_penalty=1.3, no_repeat_ngram_size=2, output_scores=True),
        "beam search": dict(num_beams=3, length_penalty=0.8),
    }


def _equal_over_calls(dec: GPT2Decoder, image_of: Callable[[int], torch.Tensor], kw: dict, device) -> None:
    """cuda_graph=True equals the eager loop over three calls with new images."""
    for call in range(3):
        image = image_of(call)
        bos = torch.full((image.shape[0], 1), dec.config.bos_token_id, device=device)
        outs = []
        for graphed in (False, True):
            gen = torch.Generator(device=device).manual_seed(call)
            outs.append(dec.generate(image, bos, max_new_tokens=NEW, generator=gen, cuda_graph=graphed, **kw))
        if not torch.equal(outs[0].sequences, outs[1].sequences):
            raise AssertionError(f"call {call}: graphed tokens differ from eager")
        if outs[0].scores is not None:
            torch.testing.assert_close(outs[1].scores, outs[0].scores)


def _lengths_share_a_capture(dec: GPT2Decoder, image: torch.Tensor, device) -> None:
    """Calls whose prompt + new tokens round to the same `SLOT_ROUND` band replay one capture, with eager tokens."""
    from vlblocks.generation import graph

    graph.release_graphs(dec)
    bos = torch.full((image.shape[0], 1), dec.config.bos_token_id, device=device)
    for new in (NEW, NEW - 5, NEW + 7):
        eager = dec.generate(image, bos, max_new_tokens=new).sequences
        if not torch.equal(dec.generate(image, bos, max_new_tokens=new, cuda_graph=True).sequences, eager):
            raise AssertionError(f"max_new_tokens={new}: graphed tokens differ from eager")
    if len(graph._KEPT[dec]) != 1:
        raise AssertionError(f"{len(graph._KEPT[dec])} captures for three lengths in one band, expected 1")


def _no_sync(dec: GPT2Decoder, image: torch.Tensor, kw: dict, device) -> None:
    """One warm generate under set_sync_debug_mode('error')."""
    bos = torch.full((image.shape[0], 1), dec.config.bos_token_id, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    dec.generate(image, bos, max_new_tokens=NEW, generator=gen, **kw)  # warm: captures, compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        dec.generate(image, bos, max_new_tokens=NEW, generator=gen, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    hf, ours = _hf_pair(device)
    prefix = _prefix_decoder(device)
    g = torch.Generator(device=device)
    cross_image = lambda call: torch.randn(B, NI, 128, device=device, generator=g.manual_seed(call))  # noqa: E731
    prefix_image = lambda call: torch.randn(B, 8, 96, device=device, generator=g.manual_seed(call))  # noqa: E731
    failed = 0

    def check(name: str, fn: Callable[..., None], *args) -> None:
        nonlocal failed
        try:
            fn(*args)
            print(f"ok    {name}", flush=True)
        except Exception:  # report every failure, then go on
            failed += 1
            print(f"FAIL  {name}\n{traceback.format_exc()}", flush=True)

    def hf_greedy() -> None:
        import transformers

        image = cross_image(0)
        bos = torch.full((B, 1), hf.config.bos_token_id, device=device)
        with torch.no_grad():
            theirs = hf.generate(bos, attention_mask=torch.ones_like(bos), encoder_hidden_states=image,
                                 generation_config=transformers.GenerationConfig(
                                     max_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0))
        for graphed in (False, True) if cuda else (False,):
            mine = ours.generate(image, bos, max_new_tokens=NEW, eos_token_id=None, cuda_graph=graphed).sequences
            if not torch.equal(mine, theirs):
                raise AssertionError(f"cuda_graph={graphed}: greedy tokens differ from HF")

    check("greedy tokens equal HF's (eager and graphed)", hf_greedy)
    if not cuda:
        print("not a CUDA device: the graph and sync checks need one")
        return int(failed > 0)
    cases = [(f"cross, {name}", ours, cross_image, kw) for name, kw in _configs(device).items()]
    cases.append(("prefix, greedy", prefix, prefix_image, {}))
    cases.append(("prefix, sampling", prefix, prefix_image, dict(temperature=0.9, top_p=0.9)))
    if not args.no_compile:
        cases.append(("cross, greedy, compiled step", ours, cross_image, dict(compile_step=True)))
    for name, dec, image_of, kw in cases:
        check(f"{name}: cuda_graph=True equals eager over 3 calls", _equal_over_calls, dec, image_of, kw, device)
        for graphed in (False, True):
            check(f"{name}: no host sync (cuda_graph={graphed})", _no_sync, dec, image_of(0),
                  dict(kw, cuda_graph=graphed), device)
    check("cross, greedy, check_every=4: no host sync", _no_sync, ours, cross_image(0), dict(check_every=4), device)
    check("cross, greedy: three lengths in one slot band share a capture", _lengths_share_a_capture, ours,
          cross_image(1), device)
    print(f"\n{len(cases) * 3 + 3 - failed} passed, {failed} failed", flush=True)
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
