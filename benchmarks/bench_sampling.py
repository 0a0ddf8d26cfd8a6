"""Benchmark: one sampling step, vlblocks `sample_next_token` vs HF's logits-warper chain + `torch.multinomial`.

Batch 64 x vocabulary 50,257 (GPT-2) float32 logits. Two settings: temperature 0.7 + top-k 50 + top-p 0.9, and
top-p 0.9 alone (plus a bare full-vocabulary `torch.sort`, the floor of any sort-based top-p). Both sides keep the
same token set (checked before timing); the calls alternate rep by rep so load on a shared machine hits both alike;
medians after warm-up; a markdown table is printed last. On a GPU, CUDA events time the device.

    python benchmarks/bench_sampling.py --threads 2 --reps 20
    python benchmarks/bench_sampling.py --device cuda --reps 100

Shapes: B rows, V vocabulary.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import timed  # benchmarks/_timing.py (run as python benchmarks/<script>.py)

from vlblocks.generation.sampling import filter_probs, sample_next_token

__all__ = ["main"]


def _hf_chain(temperature: float, top_k: int, top_p: float):
    from transformers.generation import logits_process as lp

    chain = []
    if temperature != 1.0:
        chain.append(lp.TemperatureLogitsWarper(temperature))
    if top_k:
        chain.append(lp.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(lp.TopPLogitsWarper(top_p))

    def warp(logits: torch.Tensor) -> torch.Tensor:
        for proc in chain:
            logits = proc(None, logits)
        return logits

    def sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        probs = warp(logits).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return warp, sample


def _check_same_set(logits: torch.Tensor, warp, kw: dict) -> int:
    probs, index = filter_probs(logits, **kw)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    if index is None:
        keep = probs > 0
    else:
        keep.scatter_(1, index, probs > 0)
    hf_keep = torch.isfinite(warp(logits.clone()))
    per_row = (keep != hf_keep).sum(dim=-1)
    # HF's float32 cumsum over 50k sorted probabilities rounds at the nucleus edge; allow one edge token per row
    if per_row.max().item() > 1:
        raise RuntimeError(
            f"vlblocks and HF keep different token sets ({per_row.sum().item()} tokens differ)"
        )
    return int(per_row.sum().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="CPU only: wall clock, or this process's CPU time (steadier on a loaded machine)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(args.batch, args.vocab, device=device, generator=gen) * 2.5  # peaked like an LM's

    settings = [
        ("temperature 0.7 + top-k 50 + top-p 0.9", dict(temperature=0.7, top_k=50, top_p=0.9)),
        ("top-p 0.9", dict(top_p=0.9)),
    ]
    rows = []
    for name, kw in settings:
        warp, hf_sample = _hf_chain(kw.get("temperature", 1.0), kw.get("top_k", 0), kw.get("top_p", 1.0))
        edge = _check_same_set(logits, warp, kw)
        print(f"{name}: kept sets equal HF's up to {edge} nucleus-edge token(s) over {args.batch} rows")
        runs = {
            "vlblocks": lambda kw=kw: sample_next_token(logits, generator=gen, **kw),
            "HF warpers + multinomial": lambda s=hf_sample: s(logits, gen),
        }
        if "top_k" not in kw:
            runs["full sort only"] = lambda: logits.sort(dim=-1, descending=True)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(args.warmup + args.reps):
            for label, fn in runs.items():
                t = timed(fn, device, args.clock)
                if rep >= args.warmup:
                    times[label].append(t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        for label in runs:
            rows.append((name, label, med[label], med["HF warpers + multinomial"] / med[label]))

    where = device.type + (
        f", {args.threads} thread(s)" if device.type == "cpu" else f", {torch.cuda.get_device_name()}"
    )
    print(f"\nsampling step, batch {args.batch} x vocab {args.vocab} ({where}; median of {args.reps} reps, {args.clock} clock)\n")
    print("| setting | implementation | ms / step | speed-up vs HF |")
    print("|---|---|---:|---:|")
    for name, label, ms, ratio in rows:
        print(f"| {name} | {label} | {ms:.2f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
