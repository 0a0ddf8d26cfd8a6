"""Semantic segmentation metrics from one accumulated confusion matrix: mIoU, per-class IoU, pixel accuracies.

The definitions are those of the PASCAL VOC / Cityscapes evaluations as mmsegmentation computes them
(`mmseg.evaluation.metrics.IoUMetric`): over every pixel of the evaluated set (not per image), class c has
IoU_c = TP_c / (TP_c + FP_c + FN_c); mIoU is the mean over the classes present in the prediction or the target
(a class absent from both has no IoU and is left out, not counted as 0 or 1); pixel accuracy (mmseg's aAcc) is
sum TP / labelled pixels; class accuracy Acc_c = TP_c / (TP_c + FN_c) and its mean over the classes present in
the target (mmseg's mAcc). Pixels whose target is `ignore_index` (255 in VOC / ADE20K PNG masks) are dropped.
Counts are int64, so a metric object can be updated on every rank, merged and all-reduced exactly.

Shapes: B batch, C classes (`num_classes`), H x W pixels (any number of trailing dims works).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from vlblocks._checks import check_int, check_positive_int, check_tensor

__all__ = ["SegmentationMetrics", "SegmentationResult"]


@dataclass(frozen=True)
class SegmentationResult:
    """What `SegmentationMetrics.compute()` returns.

    Attributes:
        miou: mean IoU over the classes present in the prediction or the target.
        iou: (C,) float64 IoU per class, NaN for a class absent from both prediction and target.
        pixel_accuracy: correctly labelled pixels / labelled pixels (mmseg's aAcc).
        mean_class_accuracy: mean of `class_accuracy` over the classes present in the target (mmseg's mAcc).
        class_accuracy: (C,) float64 recall per class, NaN for a class absent from the target.
        confusion: (C, C) int64 counts, rows = target class, columns = predicted class.
    """

    miou: float
    iou: torch.Tensor
    pixel_accuracy: float
    mean_class_accuracy: float
    class_accuracy: torch.Tensor
    confusion: torch.Tensor

    def iou_list(self) -> list[float | None]:
        """`iou` as a JSON-able list of C floats, None for a class absent from both prediction and target."""
        return [None if v != v else v for v in self.iou.tolist()]  # v != v: NaN


class SegmentationMetrics:
    """Accumulate a (C, C) confusion matrix over batches and compute mIoU and accuracies from it.

    Args:
        num_classes: number of classes C; labels are 0 .. C-1.
        ignore_index: target value of pixels that count nowhere (default 255, the PNG-mask convention).
            It must not be a class id, i.e. not in [0, C).

    Use: `update(logits_or_pred, target)` per batch, `all_reduce()` under torchrun, then `compute()`.
    `merge(other)` adds another metric's counts (e.g. one per data shard).
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 255) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.ignore_index = check_int("ignore_index", ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index must not be a class id (outside [0, {self.num_classes})), got {self.ignore_index}"
            )
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)  # (C, C)

    def reset(self) -> None:
        """Forget every count."""
        self.confusion = torch.zeros_like(self.confusion)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            pred: class logits / scores (B, C, H, W) (argmax over dim 1 is taken), or predicted labels
                (B, H, W) as an integer tensor.
            target: (B, H, W) integer labels in [0, C), or `ignore_index`.

        Raises:
            ValueError: shapes that do not match, a predicted label outside [0, C), or a target label that is
                neither in [0, C) nor `ignore_index`.
        """
        pred, target = self._labels(pred, target)
        c = self.num_classes
        ignored = target == self.ignore_index  # (B, H, W)
        lo, hi = torch.aminmax(target.masked_fill(ignored, 0))  # one pass, one sync
        if lo < 0 or hi >= c:
            bad = target[((target < 0) | (target >= c)) & ~ignored][0].item()
            raise ValueError(
                f"target labels must be in [0, {c}) or ignore_index={self.ignore_index}, got {bad}"
            )
        index = (target * c + pred).masked_fill_(ignored, c * c)  # (B, H, W); ignored pixels -> one spare bin
        counts = torch.bincount(index.flatten(), minlength=c * c + 1)[: c * c]  # (C * C,) + spare bin dropped
        counts = counts.view(c, c)  # (C, C) rows target, columns prediction
        if self.confusion.device != counts.device:
            self.confusion = self.confusion.to(counts.device)
        self.confusion += counts

    def _labels(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred labels, target labels) as int64 tensors of the same shape, checked."""
        check_tensor("target", target, dtype="int")
        check_tensor("pred", pred)
        c = self.num_classes
        if pred.is_floating_point():
            expected = (target.shape[0], c, *target.shape[1:]) if target.dim() else None
            if target.dim() == 0 or tuple(pred.shape) != expected:
                raise ValueError(
                    f"pred logits must have shape (B, C={c}, ...) matching target {tuple(target.shape)}, "
                    f"got {tuple(pred.shape)}"
                )
            pred = pred.argmax(dim=1)  # (B, H, W)
        else:
            check_tensor("pred", pred, dtype="int")
            if pred.shape != target.shape:
                raise ValueError(
                    f"pred labels must have the shape of target {tuple(target.shape)}, got {tuple(pred.shape)}"
                )
            lo, hi = torch.aminmax(pred)
            if lo < 0 or hi >= c:
                raise ValueError(
                    f"pred labels must be in [0, {c}), got {pred[(pred < 0) | (pred >= c)][0].item()}"
                )
        return pred.long(), target.to(device=pred.device, dtype=torch.long)

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add `other`'s counts to this metric (in place) and return self."""
        if not isinstance(other, SegmentationMetrics):
            raise TypeError(f"other must be a SegmentationMetrics, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"other must have num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"got num_classes={other.num_classes}, ignore_index={other.ignore_index}"
            )
        self.confusion = self.confusion + other.confusion.to(self.confusion.device)
        return self

    def all_reduce(self) -> SegmentationMetrics:
        """Sum the counts over all ranks of the default process group (in place; no-op without one); returns self.

        Every rank must call it. With NCCL the counts travel on the current CUDA device, with gloo on the CPU.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        buf = self.confusion.to(comm)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.confusion = buf.to(self.confusion.device)
        return self

    def compute(self) -> SegmentationResult:
        """mIoU, per-class IoU and accuracies of everything seen so far (see `SegmentationResult`).

        Raises:
            ValueError: when no labelled pixel has been counted yet.
        """
        conf = self.confusion.cpu()  # (C, C)
        total = int(conf.sum())
        if total == 0:
            raise ValueError("compute() needs at least one labelled pixel; update() has counted none")
        conf64 = conf.double()
        tp = conf64.diagonal()  # (C,)
        in_target, in_pred = conf64.sum(dim=1), conf64.sum(dim=0)  # (C,), (C,)
        union = in_target + in_pred - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        class_acc = torch.where(in_target > 0, tp / in_target.clamp(min=1), nan)
        return SegmentationResult(
            miou=float(iou.nanmean()),
            iou=iou,
            pixel_accuracy=float(tp.sum() / total),
            mean_class_accuracy=float(class_acc.nanmean()),
            class_accuracy=class_acc,
            confusion=conf.clone(),
        )

    def __repr__(self) -> str:
        return (
            f"SegmentationMetrics(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.confusion.sum())})"
        )
