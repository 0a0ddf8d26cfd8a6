"""Benchmark: vlblocks `SegmentationMetrics.update` vs torchmetrics `MeanIoU` and `MulticlassJaccardIndex` updates.

The three accumulate segmentation counts for the same batch of predicted and true label maps (B, H, W), C classes:
vlblocks one `bincount` into a (C, C) confusion matrix (with label checks), torchmetrics `MeanIoU` per-image one-hot
intersections and unions (`input_format="index"`), torchmetrics `MulticlassJaccardIndex` a confusion matrix. They are
checked to agree before timing (the confusion matrices are equal and the mIoU equals the Jaccard macro mean; MeanIoU
averages per image, so it is compared on one image). The implementations alternate rep by rep so load on a shared
machine hits all alike; after warm-up the median is reported and a markdown table is printed last.

    python benchmarks/bench_segmentation_metric.py --threads 2 --reps 10
    python benchmarks/bench_segmentation_metric.py --device cuda --reps 50

Shapes: B batch, C classes, H x W pixels.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import timed  # benchmarks/_timing.py (run as python benchmarks/<script>.py)

from vlblocks.metrics import SegmentationMetrics

__all__ = ["main"]


def _check_agreement(pred: torch.Tensor, target: torch.Tensor, classes: int, device: torch.device) -> float:
    """Max |difference| of mIoU between vlblocks and torchmetrics; raises when the counts differ."""
    from torchmetrics.classification import MulticlassJaccardIndex
    from torchmetrics.segmentation import MeanIoU

    ours = SegmentationMetrics(classes)
    ours.update(pred, target)
    jaccard = MulticlassJaccardIndex(classes, average="macro").to(device)
    jaccard.update(pred, target)
    if not torch.equal(ours.confusion.cpu(), jaccard.confmat.cpu().long()):
        raise RuntimeError("vlblocks and torchmetrics confusion matrices differ")
    one = SegmentationMetrics(classes)
    one.update(pred[:1], target[:1])
    mean_iou = MeanIoU(num_classes=classes, input_format="index").to(device)
    mean_iou.update(pred[:1], target[:1])
    return max(
        abs(ours.compute().miou - float(jaccard.compute())),
        abs(one.compute().miou - float(mean_iou.compute())),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    from torchmetrics.classification import MulticlassJaccardIndex
    from torchmetrics.segmentation import MeanIoU

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = (args.batch, args.size, args.size)
    target = torch.randint(0, args.classes, shape, device=device)
    noise = torch.randint(0, args.classes, shape, device=device)
    pred = torch.where(torch.rand(shape, device=device) < 0.7, target, noise)  # about 70 % correct
    diff = _check_agreement(pred, target, args.classes, device)

    ours = SegmentationMetrics(args.classes)
    mean_iou = MeanIoU(num_classes=args.classes, input_format="index").to(device)
    jaccard = MulticlassJaccardIndex(args.classes, average="macro").to(device)
    runs = {
        "vlblocks SegmentationMetrics.update": lambda: ours.update(pred, target),
        "torchmetrics MeanIoU.update": lambda: mean_iou.update(pred, target),
        "torchmetrics MulticlassJaccardIndex.update": lambda: jaccard.update(pred, target),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.warmup + args.reps):
        for name, fn in runs.items():
            seconds = timed(fn, device)
            if rep >= args.warmup:
                times[name].append(seconds)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base = medians["vlblocks SegmentationMetrics.update"]

    where = f"{device.type}" + (f", {args.threads} thread(s)" if device.type == "cpu" else "")
    print(
        f"segmentation metric update: B={args.batch} C={args.classes} {args.size}x{args.size} label maps, {where}, "
        f"median of {args.reps} reps; mIoU agrees to {diff:.1e}\n"
    )
    print("| implementation | median ms | ratio to vlblocks |")
    print("|---|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
