"""LoRA training-step and merged-inference speed: vlblocks vs peft vs a frozen-model floor.

One process, one GPT-2-shaped model (HF `GPT2LMHeadModel`, random init: 6 layers, width 768, 12 heads; batch 8,
sequence 64), LoRA r=16 alpha=32 on `c_attn`, `c_proj`, `c_fc`. A train step is forward + LM loss + backward +
AdamW step. The floor is the frozen base model with gradients flowing through every layer (only `wpe` trains), so
it pays for every backward GEMM on activations but for no LoRA branch. The variants run round-robin (one step of
each per round) after warm-up, so machine noise hits them alike; medians are reported. Merged-LoRA inference is
timed against base inference.

    python benchmarks/bench_peft.py --threads 2 --steps 20
    python benchmarks/bench_peft.py --small --steps 10          # a quick check
    python benchmarks/bench_peft.py --device cuda --steps 50    # timed with CUDA events

Shapes: B batch, N sequence length, D width.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from vlblocks.peft import apply_lora, mark_only_peft_trainable, merge_lora

TARGETS = ["c_attn", "c_proj", "c_fc"]


def make_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """A function running `fn` once and returning its time in ms (CUDA events on GPU)."""
    if device.type == "cuda":

        def cuda_time(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)

        return cuda_time

    def cpu_time(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)

    return cpu_time


def train_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()

    return step


def infer_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            model(input_ids=ids)

    return step


def run_round_robin(steps: dict[str, Callable[[], None]], warmup: int, n: int, timer) -> dict[str, float]:
    """Median ms per named step, interleaving the steps."""
    for _ in range(warmup):
        for fn in steps.values():
            timer(fn)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, fn in steps.items():
            times[name].append(timer(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def build(args: argparse.Namespace, device: torch.device) -> tuple[GPT2LMHeadModel, torch.Tensor]:
    if args.small:
        config = GPT2Config(n_embd=256, n_layer=2, n_head=4, vocab_size=8192, n_positions=128)
        batch, seq = 4, 32
    else:
        config = GPT2Config(n_embd=768, n_layer=6, n_head=12, vocab_size=50257, n_positions=1024)
        batch, seq = args.batch, args.seq
    config.attn_pdrop = config.resid_pdrop = config.embd_pdrop = (
        0.0  # the LoRA dropout is the only randomness
    )
    model = GPT2LMHeadModel(config).to(device)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    return model, ids


def lora_models(
    base: GPT2LMHeadModel, dropout: float, r: int, alpha: int
) -> tuple[torch.nn.Module, torch.nn.Module]:
    ours = copy.deepcopy(base)
    apply_lora(ours, TARGETS, r=r, alpha=alpha, dropout=dropout)
    mark_only_peft_trainable(ours)
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGETS)
    )
    return ours.train(), theirs.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--small", action="store_true", help="a 2-layer width-256 model for a quick check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    timer = make_timer(device)
    base, ids = build(args, device)
    for p in base.parameters():
        p.requires_grad_(False)
    base.transformer.wpe.weight.requires_grad_(True)  # the floor: gradients flow through every layer
    base.train()

    train_rows = []
    for dropout in (0.0, 0.1):
        ours, theirs = lora_models(base, dropout, args.r, args.alpha)
        steps = {
            "floor": train_step(base, ids),
            "vlblocks": train_step(ours, ids),
            "peft": train_step(theirs, ids),
        }
        med = run_round_robin(steps, args.warmup, args.steps, timer)
        train_rows.append((dropout, med))
        print(f"dropout {dropout}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()), flush=True)
        del ours, theirs, steps

    ours, theirs = lora_models(base, 0.0, args.r, args.alpha)
    merge_lora(ours)
    theirs.merge_adapter()  # peft's merged model keeps its wrappers, like ours
    steps = {
        name: infer_step(m.eval(), ids) for name, m in (("floor", base), ("vlblocks", ours), ("peft", theirs))
    }
    inf = run_round_robin(steps, args.warmup, args.steps, timer)
    print("merged inference: " + ", ".join(f"{k} {v:.1f} ms" for k, v in inf.items()), flush=True)

    where = (
        f"{device.type}, {args.threads} threads"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )
    shape = "small" if args.small else f"6x768, batch {args.batch}, seq {args.seq}"
    print(
        f"\nLoRA r={args.r} on {', '.join(TARGETS)} of GPT-2 ({shape}); {where}; median of {args.steps} steps\n"
    )
    print("| step | floor ms | vlblocks ms | peft ms | vlblocks/floor | peft/floor | vlblocks/peft |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"train, dropout {dropout}", m) for dropout, m in train_rows] + [
        ("inference, merged (floor = base)", inf)
    ]
    for label, m in rows:
        f, v, p = m["floor"], m["vlblocks"], m["peft"]
        print(f"| {label} | {f:.1f} | {v:.1f} | {p:.1f} | {v / f:.3f} | {p / f:.3f} | {v / p:.3f} |")


if __name__ == "__main__":
    main()
