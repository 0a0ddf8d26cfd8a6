"""Benchmark: vlblocks `CoAttentionFusion` vs the same computation built from `torch.nn.MultiheadAttention`.

Both models hold the same weights (the reference copies q/k/v into `in_proj_weight`, `proj` into `out_proj`, and
reuses the LayerNorms / FFN weights), get the same inputs (image tokens, text tokens with a padding mask: vlblocks
`text_mask` True = real token, torch `key_padding_mask` True = padding) and are checked to agree before timing.
Each rep times forward + backward of `pooled.sum()`; the two models alternate rep by rep so load on a shared
machine hits both alike; after warm-up the median is reported and a markdown table is printed last.

    python benchmarks/bench_fusion.py --threads 2 --reps 30
    python benchmarks/bench_fusion.py --device cuda --reps 100

Shapes: B batch, Ni image tokens, Nt text tokens, D width, H heads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from vlblocks.fusion import CoAttentionFusion, CoAttentionLayer

__all__ = ["TorchCoAttentionFusion", "main"]


def _mha_from(attn: nn.Module) -> nn.MultiheadAttention:
    """An `nn.MultiheadAttention` holding the weights of a vlblocks `Attention` (dim_head = dim // heads)."""
    mha = nn.MultiheadAttention(attn.dim, attn.heads, dropout=attn.dropout, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))  # (3D, D)
        mha.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]))  # (3D,)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha


class TorchCoAttentionLayer(nn.Module):
    """`CoAttentionLayer` (self_attn=False) written with `nn.MultiheadAttention` and plain torch modules."""

    def __init__(self, layer: CoAttentionLayer) -> None:
        super().__init__()
        to_text, to_image = layer.cross_attentions
        self.image_cross, self.text_cross = _mha_from(to_text), _mha_from(to_image)
        self.image_cross_norm = copy.deepcopy(layer.image_cross_norm)
        self.text_cross_norm = copy.deepcopy(layer.text_cross_norm)
        self.image_mlp_norm = copy.deepcopy(layer.image_mlp_norm)
        self.text_mlp_norm = copy.deepcopy(layer.text_mlp_norm)
        self.image_mlp = nn.Sequential(
            copy.deepcopy(layer.image_mlp.fc1), nn.GELU(), copy.deepcopy(layer.image_mlp.fc2)
        )
        self.text_mlp = nn.Sequential(
            copy.deepcopy(layer.text_mlp.fc1), nn.GELU(), copy.deepcopy(layer.text_mlp.fc2)
        )

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, key_padding_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xi, xt = self.image_cross_norm(image), self.text_cross_norm(text)
        image = image + self.image_cross(xi, xt, xt, key_padding_mask=key_padding_mask, need_weights=False)[0]
        text = text + self.text_cross(xt, xi, xi, need_weights=False)[0]
        image = image + self.image_mlp(self.image_mlp_norm(image))
        text = text + self.text_mlp(self.text_mlp_norm(text))
        return image, text


class TorchCoAttentionFusion(nn.Module):
    """`CoAttentionFusion` (pool="concat", encoder_skip=True, equal widths) built from torch modules."""

    def __init__(self, fusion: CoAttentionFusion) -> None:
        super().__init__()
        if fusion.pool != "concat" or not fusion.encoder_skip or fusion.dim_image != fusion.dim_text:
            raise ValueError("the reference covers pool='concat', encoder_skip=True and equal widths only")
        self.layers = nn.ModuleList(TorchCoAttentionLayer(layer) for layer in fusion.layers)
        self.image_norm = copy.deepcopy(fusion.image_norm)
        self.text_norm = copy.deepcopy(fusion.text_norm)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, key_padding_mask: torch.Tensor
    ) -> torch.Tensor:
        image_in, text_in = image[:, 0], text[:, 0]  # (B, D)
        for layer in self.layers:
            image, text = layer(image, text, key_padding_mask)
        image, text = self.image_norm(image), self.text_norm(text)
        return torch.cat([image[:, 0] + image_in, text[:, 0] + text_in], dim=-1)  # (B, 2D)


def _step(fn, params: list[nn.Parameter], device: torch.device) -> float:
    """Seconds for one forward + backward."""
    for p in params:
        p.grad = None
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn().sum().backward()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn().sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--ni", type=int, default=65)
    parser.add_argument("--nt", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    ours = CoAttentionFusion(args.dim, args.dim, heads=args.heads, depth=args.depth).to(device)
    ref = TorchCoAttentionFusion(ours).to(device)
    image = torch.randn(args.batch, args.ni, args.dim, device=device)
    text = torch.randn(args.batch, args.nt, args.dim, device=device)
    lengths = torch.randint(args.nt // 2, args.nt + 1, (args.batch,), device=device)
    text_mask = torch.arange(args.nt, device=device)[None] < lengths[:, None]  # (B, Nt) True = real token
    padding = ~text_mask  # torch convention: True = ignore

    run_ours = lambda: ours(image, text, text_mask=text_mask).pooled  # noqa: E731
    run_ref = lambda: ref(image, text, padding)  # noqa: E731
    with torch.no_grad():
        diff = (run_ours() - run_ref()).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"the two implementations disagree: max |diff| = {diff:.3g}")

    params_ours, params_ref = list(ours.parameters()), list(ref.parameters())
    for _ in range(args.warmup):
        _step(run_ours, params_ours, device)
        _step(run_ref, params_ref, device)
    t_ours, t_ref = [], []
    for _ in range(args.reps):
        t_ours.append(_step(run_ours, params_ours, device))
        t_ref.append(_step(run_ref, params_ref, device))
    m_ours, m_ref = statistics.median(t_ours) * 1e3, statistics.median(t_ref) * 1e3

    where = f"{device.type}" + (f", {args.threads} thread(s)" if device.type == "cpu" else "")
    print(
        f"CoAttentionFusion fwd+bwd: B={args.batch} Ni={args.ni} Nt={args.nt} D={args.dim} H={args.heads} "
        f"depth={args.depth}, {where}, median of {args.reps} reps; outputs agree to {diff:.1e}\n"
    )
    print("| implementation | median ms | ratio vlblocks/torch |")
    print("|---|---|---|")
    print(f"| torch nn.MultiheadAttention | {m_ref:.2f} | 1.00 |")
    print(f"| vlblocks CoAttentionFusion | {m_ours:.2f} | {m_ours / m_ref:.2f} |")


if __name__ == "__main__":
    main()
