"""Benchmark: what recording attention costs, vlblocks `record_attention` vs HF eager `output_attentions=True`.

A ViT-B/16-shaped model (random init, 12 layers, width 768, 12 heads, 224 px, batch 8), inference (`no_grad`, eval):

- timm `vit_base_patch16_224` with fused attention: unhooked; recording one layer; recording all 12 layers;
- HF `ViTModel` with the same shape: sdpa unhooked; sdpa recording all 12 layers; eager with `output_attentions=True`
  (what HF offers: the whole model leaves the fused kernel).

Recorded maps are checked against timm's own manual path / HF's eager attentions before timing. The configurations
alternate rep by rep, so load on a shared machine hits all alike; after warm-up the median is reported and a markdown
table is printed last.

    python benchmarks/bench_hooks.py --threads 2 --reps 5
    python benchmarks/bench_hooks.py --threads 1 --reps 5 --clock cpu   # steadier on a busy shared machine
    python benchmarks/bench_hooks.py --device cuda --reps 50

Shapes: B batch, N = 1 + 196 tokens, D width 768, H 12 heads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
from _timing import timed  # benchmarks/_timing.py (run as python benchmarks/<script>.py)

from vlblocks.hooks import record_attention

__all__ = ["main"]


def _recording(
    model: torch.nn.Module, layers: str | None, call: Callable[[], object]
) -> Callable[[], object]:
    def run() -> object:
        with record_attention(model, layers):
            return call()

    return run


def _check(timm_model, hf_sdpa, hf_eager, x: torch.Tensor) -> float:
    """Largest difference between recorded maps and the peers' own eager maps (timm manual path, HF eager)."""
    manual = copy.deepcopy(timm_model)
    seen: list[torch.Tensor] = []
    manual.blocks[5].attn.fused_attn = False
    manual.blocks[5].attn.attn_drop.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    manual(x)
    with record_attention(timm_model, "blocks.5.attn") as rec:
        timm_model(x)
    diff = (rec.maps["blocks.5.attn"] - seen[0]).abs().max().item()
    reference = hf_eager(pixel_values=x, output_attentions=True).attentions
    with record_attention(hf_sdpa) as rec_hf:
        hf_sdpa(pixel_values=x)
    for name, ref in zip(rec_hf.layers, reference):
        diff = max(diff, (rec_hf.maps[name] - ref).abs().max().item())
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="CPU timing: wall clock, or the process's CPU time (steadier on a shared machine with --threads 1)",
    )
    args = parser.parse_args()
    import timm
    from transformers import ViTConfig, ViTModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False).to(device).eval()
    config = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    hf_eager = (
        ViTModel(ViTConfig(**config, attn_implementation="eager"), add_pooling_layer=False).to(device).eval()
    )
    hf_sdpa = (
        ViTModel(ViTConfig(**config, attn_implementation="sdpa"), add_pooling_layer=False).to(device).eval()
    )
    hf_sdpa.load_state_dict(hf_eager.state_dict())
    x = torch.randn(args.batch, 3, 224, 224, device=device)

    timm_call = lambda: vit(x)  # noqa: E731
    hf_call = lambda: hf_sdpa(pixel_values=x)  # noqa: E731
    configs: dict[str, Callable[[], object]] = {
        "timm ViT-B/16 fused, not recording": timm_call,
        "timm + record_attention, 1 layer": _recording(vit, "blocks.11.attn", timm_call),
        "timm + record_attention, all 12 layers": _recording(vit, None, timm_call),
        "HF ViTModel sdpa, not recording": hf_call,
        "HF sdpa + record_attention, all 12 layers": _recording(hf_sdpa, None, hf_call),
        "HF eager + output_attentions=True": lambda: hf_eager(pixel_values=x, output_attentions=True),
    }
    with torch.no_grad():
        diff = _check(vit, hf_sdpa, hf_eager, x[:2])
        if diff > 1e-4:
            raise RuntimeError(f"recorded maps disagree with the eager reference: max |diff| = {diff:.3g}")
        for _ in range(args.warmup):
            for fn in configs.values():
                timed(fn, device, args.clock)
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.reps):
            for name, fn in configs.items():
                times[name].append(timed(fn, device, args.clock))
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base_timm, base_hf = (
        median["timm ViT-B/16 fused, not recording"],
        median["HF ViTModel sdpa, not recording"],
    )

    where = f"{device.type}" + (
        f", {args.threads} thread(s), {args.clock} clock" if device.type == "cpu" else ""
    )
    print(
        f"ViT-B/16 inference, B={args.batch}, 224 px, {where}, median of {args.reps} reps after {args.warmup} "
        f"warm-up; recorded maps match the eager reference to {diff:.1e}\n"
    )
    print("| configuration | median ms | ratio to its unrecorded forward |")
    print("|---|---|---|")
    for name, ms in median.items():
        base = base_timm if name.startswith("timm") else base_hf
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
