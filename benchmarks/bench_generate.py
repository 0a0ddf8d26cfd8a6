"""Benchmark: tokens per second of vlblocks `GPT2Decoder.generate` vs HF `GPT2LMHeadModel.generate`, same weights.

GPT-2 with cross-attention over 197 image tokens (a ViT-B/16 image), vocabulary 50,257, prompt = BOS, 30 new tokens,
greedy and top-p 0.9, batch 1 / 8 / 32, for two sizes: "tiny" (2 layers, width 128: per-step overhead dominates) and
"small" (GPT-2-small width, 12 layers, 768: CPU decoding is bound by reading the weights). The HF model is saved with
`save_pretrained` and loaded into vlblocks from that folder; greedy tokens are checked equal before timing. HF runs
without an eos token so both sides decode all 30 steps. The implementations alternate rep by rep; medians after
warm-up. On CUDA each configuration first runs one whole `generate` under `torch.cuda.set_sync_debug_mode("error")`
(any host sync raises). The table printed last gives tokens / s, the ratio to HF and, for CPU, the floor: a decode
step reads every weight once (all but the cross-attention's key / value projections, which run once per call), so
tokens / s <= batch * memory bandwidth / those bytes (bandwidth measured here by a large copy).

    python benchmarks/bench_generate.py --threads 2                       # both sizes (short: 2 reps)
    python benchmarks/bench_generate.py --sizes tiny --reps 5
    python benchmarks/bench_generate.py --device cuda --reps 5                # CUDA events, eager step
    python benchmarks/bench_generate.py --device cuda --cuda-graph --reps 5   # the step replayed from a CUDA graph
    python benchmarks/bench_generate.py --device cuda --compile --cuda-graph --reps 5   # compiled, then captured

Shapes: B batch, Ni = 197 image tokens, D width, T = 30 new tokens.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from _timing import timed  # benchmarks/_timing.py (run as python benchmarks/<script>.py)

from vlblocks.decoders import GPT2Decoder

__all__ = ["main"]

SIZES = {"tiny": dict(n_layer=2, n_embd=128, n_head=2), "small": dict(n_layer=12, n_embd=768, n_head=12)}


def _bandwidth(device: torch.device) -> float:
    """Bytes / s of a large copy (read + write)."""
    src = torch.empty(64 * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        t = timed(lambda: dst.copy_(src), device)
        times.append(t)
    return 2 * src.numel() * 4 / min(times)


def _step_weight_bytes(decoder: GPT2Decoder) -> int:
    """Bytes of the weights a decode step reads: every parameter once (the tied embedding / LM head once), except
    the cross-attention's key / value projections, which `generate` runs once per call on the image tokens."""
    once = {id(p) for blk in decoder.transformer.h if blk.has_cross for p in blk.crossattention.c_attn.parameters()}
    return sum(p.numel() * p.element_size() for p in decoder.parameters() if id(p) not in once)


def _models(size: str, device: torch.device):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_positions=64, add_cross_attention=True, **SIZES[size])
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT2Decoder.from_pretrained(folder).eval()
    return hf.to(device), ours.to(device)


def _measure(
    hf, ours, image, bos, kw: dict, args, device: torch.device, *, check: bool
) -> dict[str, list[float]]:
    """Seconds per `generate` call of each implementation, alternating rep by rep."""
    import transformers

    gen = torch.Generator(device=device).manual_seed(0)
    hf_cfg = transformers.GenerationConfig(
        max_new_tokens=args.new_tokens,
        do_sample=bool(kw),
        top_p=kw.get("top_p", 1.0),
        top_k=0,
        eos_token_id=None,
        pad_token_id=0,
    )

    def run_hf():
        with torch.no_grad():
            return hf.generate(
                bos,
                attention_mask=torch.ones_like(bos),
                encoder_hidden_states=image,
                generation_config=hf_cfg,
            )

    def run_ours():
        return ours.generate(
            image, bos, max_new_tokens=args.new_tokens, generator=gen, compile_step=args.compile,
            cuda_graph=args.cuda_graph, **kw
        ).sequences

    if check and not torch.equal(run_ours(), run_hf()):
        raise RuntimeError(f"batch {bos.shape[0]}: greedy tokens differ from HF")
    if device.type == "cuda":  # the whole call, warm, under the sync debug mode: any host sync raises
        run_ours()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            run_ours()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        print(f"B={bos.shape[0]} {kw or 'greedy'}: generate ran under set_sync_debug_mode('error')", flush=True)
    times: dict[str, list[float]] = {"vlblocks": [], "HF": []}
    for rep in range(args.warmup + args.reps):
        for label, fn in (("vlblocks", run_ours), ("HF", run_hf)):
            t = timed(fn, device, args.clock)
            if rep >= args.warmup:
                times[label].append(t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="CPU only: wall clock, or this process's CPU time (steadier on a loaded machine)")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="vlblocks: torch.compile the decode step")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="vlblocks: replay the decode step from a CUDA graph (captured in the warm-up call)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bandwidth = _bandwidth(device)
    rows = []
    for size in args.sizes.split(","):
        hf, ours = _models(size, device)
        weight_bytes = _step_weight_bytes(ours)
        for batch in (int(b) for b in args.batches.split(",")):
            image = torch.randn(batch, 197, ours.dim, device=device)
            bos = torch.full((batch, 1), hf.config.bos_token_id, device=device)
            for mode, kw in (("greedy", dict()), ("top-p 0.9", dict(temperature=1.0, top_p=0.9))):
                times = _measure(hf, ours, image, bos, kw, args, device, check=mode == "greedy")
                tps = {k: batch * args.new_tokens / statistics.median(v) for k, v in times.items()}
                floor = batch * bandwidth / weight_bytes
                rows.append((size, batch, mode, tps["vlblocks"], tps["HF"], floor))
                print(
                    f"{size} B={batch} {mode}: vlblocks {tps['vlblocks']:.1f} tok/s, HF {tps['HF']:.1f} tok/s",
                    flush=True,
                )

    where = device.type + (
        f", {args.threads} thread(s)" if device.type == "cpu" else f", {torch.cuda.get_device_name()}"
    )
    print(
        f"\ngenerate, {args.new_tokens} new tokens, cross-attention over 197 image tokens ({where}; median of "
        f"{args.reps} reps, {args.clock} clock; copy bandwidth {bandwidth / 1e9:.1f} GB/s"
        f"{'; compiled step' if args.compile else ''}{'; CUDA graph' if args.cuda_graph else ''})\n"
    )
    print("| size | batch | decoding | vlblocks tok/s | HF tok/s | vs HF | floor tok/s | floor / vlblocks |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for size, batch, mode, ours_tps, hf_tps, floor in rows:
        print(
            f"| {size} | {batch} | {mode} | {ours_tps:.1f} | {hf_tps:.1f} | {ours_tps / hf_tps:.2f}x | "
            f"{floor:.1f} | {floor / ours_tps:.2f} |"
        )


if __name__ == "__main__":
    main()
