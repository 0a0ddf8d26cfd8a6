"""Benchmark: vlblocks `contrastive_loss` vs open_clip `ClipLoss`, and `retrieval_recall` vs a full-sort Recall@K.

1. Forward + backward of the CLIP loss on (B, E) image and text embeddings and a learnable log scale, B = 256 and
   1,024, E = 512. Both sides do the same work: open_clip's `ClipLoss` gets `F.normalize`d embeddings (open_clip
   models normalise in `encode_*`), vlblocks normalises inside (`normalize=True`). The losses and gradients are
   checked to agree first; the two implementations alternate rep by rep so load on a shared machine hits both alike.
2. Recall@1/5/10 both ways on a random (5,000 images x 25,000 texts) similarity, 5 captions per image (the COCO 5k
   test split's shape): `retrieval_recall` (chunked counting) vs the plain way (argsort every row and column).
   Ranks are checked to agree; time and peak extra memory (CPU: peak RSS above the inputs, reset through
   /proc/self/clear_refs; CUDA: `max_memory_allocated`) are reported.

    python benchmarks/bench_contrastive.py --threads 1
    python benchmarks/bench_contrastive.py --device cuda --reps 100

Shapes: B batch, E embedding width, I images, T texts.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import timed  # benchmarks/_timing.py (run as python benchmarks/<script>.py)

from vlblocks.losses import contrastive_loss
from vlblocks.metrics import retrieval_recall

__all__ = ["full_sort_ranks", "main"]


def _open_clip_loss():
    """open_clip's ClipLoss, from open_clip/loss.py alone (the package import takes ~10 s and is not measured)."""
    import importlib.util
    from pathlib import Path

    folder = importlib.util.find_spec("open_clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("open_clip_loss", Path(folder) / "loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ClipLoss()


def bench_loss(
    batch: int, dim: int, reps: int, warmup: int, device: torch.device
) -> tuple[float, float, float]:
    """(median ms vlblocks, median ms open_clip, max |difference| of loss and gradients)."""
    g = torch.Generator(device=device).manual_seed(batch)
    image = torch.randn(batch, dim, device=device, generator=g).requires_grad_()
    text = torch.randn(batch, dim, device=device, generator=g).requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    clip_loss = _open_clip_loss()
    leaves = (image, text, log_scale)

    def ours() -> torch.Tensor:
        loss = contrastive_loss(image, text, log_scale.exp())
        loss.backward()
        return loss

    def ref() -> torch.Tensor:
        loss = clip_loss(F.normalize(image, dim=-1), F.normalize(text, dim=-1), log_scale.exp())
        loss.backward()
        return loss

    def run(fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        for leaf in leaves:
            leaf.grad = None
        return [fn().detach()] + [leaf.grad.clone() for leaf in leaves]

    diff = max(float((a - b).abs().max()) for a, b in zip(run(ours), run(ref)))
    for _ in range(warmup):
        run(ours), run(ref)
    t_ours, t_ref = [], []
    for _ in range(reps):
        for leaf in leaves:
            leaf.grad = None
        t_ours.append(timed(ours, device))
        for leaf in leaves:
            leaf.grad = None
        t_ref.append(timed(ref, device))
    return statistics.median(t_ours) * 1e3, statistics.median(t_ref) * 1e3, diff


def full_sort_ranks(
    similarity: torch.Tensor, text_to_image: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain way: argsort every column and every row; (image->text ranks (I,), text->image ranks (T,))."""
    num_images = similarity.shape[0]
    order = similarity.T.argsort(dim=1, descending=True)  # (T, I) images by score for every text
    t2i = (order == text_to_image[:, None]).int().argmax(dim=1) + 1
    del order
    order = similarity.argsort(dim=1, descending=True)  # (I, T) texts by score for every image
    hits = text_to_image[order] == torch.arange(num_images, device=similarity.device)[:, None]  # (I, T)
    del order
    i2t = hits.int().argmax(dim=1) + 1
    return i2t, t2i


def full_sort_recall(
    similarity: torch.Tensor, text_to_image: torch.Tensor, ks=(1, 5, 10)
) -> dict[str, float]:
    i2t, t2i = full_sort_ranks(similarity, text_to_image)
    return {
        f"{d}_R@{k}": float((r <= k).double().mean()) for d, r in (("i2t", i2t), ("t2i", t2i)) for k in ks
    }


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _peak_extra_mib(fn: Callable[[], object], device: torch.device) -> tuple[float, float, object]:
    """(seconds, peak extra MiB above the memory in use before the call, result) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return seconds, (torch.cuda.max_memory_allocated() - before) / 2**20, out
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        return float("nan"), float("nan"), fn()
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return seconds, (_rss_kib("VmHWM") - before) / 1024, out


def bench_recall(num_images: int, captions: int, device: torch.device) -> list[tuple[str, float, float]]:
    g = torch.Generator(device=device).manual_seed(0)
    similarity = torch.randn(num_images, num_images * captions, device=device, generator=g)
    text_to_image = torch.arange(num_images * captions, device=device) // captions
    text_to_image = text_to_image[torch.randperm(text_to_image.numel(), device=device, generator=g)]
    keep = text_to_image < 50
    retrieval_recall(similarity[:50, keep], text_to_image[keep])  # warm-up
    s_ours, m_ours, ours = _peak_extra_mib(lambda: retrieval_recall(similarity, text_to_image), device)
    s_ref, m_ref, ref = _peak_extra_mib(lambda: full_sort_ranks(similarity, text_to_image), device)
    same = [
        torch.equal(a, b.cpu()) for a, b in zip((ours.image_to_text.ranks, ours.text_to_image.ranks), ref)
    ]
    if not all(same):
        raise RuntimeError("retrieval_recall and the full sort disagree on the ranks")
    return [
        ("full sort (argsort rows and columns)", s_ref, m_ref),
        ("vlblocks retrieval_recall", s_ours, m_ours),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = f"{device.type}" + (f", {args.threads} thread(s)" if device.type == "cpu" else "")

    rows = []
    for batch in args.batches:
        ms_ours, ms_ref, diff = bench_loss(batch, args.dim, args.reps, args.warmup, device)
        rows.append((batch, ms_ours, ms_ref, diff))
    recall_rows = bench_recall(args.images, args.captions, device)

    print(f"CLIP loss forward + backward, E={args.dim}, {where}, median of {args.reps} reps\n")
    print(
        "| B | open_clip ClipLoss ms | vlblocks contrastive_loss ms | ratio vlblocks/open_clip | max abs diff |"
    )
    print("|---|---|---|---|---|")
    for batch, ms_ours, ms_ref, diff in rows:
        print(f"| {batch} | {ms_ref:.2f} | {ms_ours:.2f} | {ms_ours / ms_ref:.2f} | {diff:.1e} |")
    texts = args.images * args.captions
    print(
        f"\nRecall@1/5/10 both ways, {args.images} images x {texts} texts ({args.captions} captions each), {where}\n"
    )
    print("| implementation | seconds | peak extra memory MiB |")
    print("|---|---|---|")
    for name, seconds, mib in recall_rows:
        print(f"| {name} | {seconds:.2f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
