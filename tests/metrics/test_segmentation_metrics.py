"""SegmentationMetrics: a brute-force numpy reference, torchmetrics parity, ignore_index, merge, all-reduce, errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassJaccardIndex
from torchmetrics.segmentation import MeanIoU

from vlblocks.metrics import SegmentationMetrics, SegmentationResult

C, IGNORE = 5, 255


def _batch(b: int = 3, h: int = 6, w: int = 7, *, seed: int = 0, ignore: float = 0.15, classes: int = C):
    """(pred (B, H, W), target (B, H, W)) with ~`ignore` of the target pixels set to IGNORE; class 4 never in
    the target and class 3 never predicted, so the absent-class rules are exercised."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes - 1, (b, h, w), generator=g)
    pred = torch.where(
        torch.rand(b, h, w, generator=g) < 0.6, target, torch.randint(0, classes, (b, h, w), generator=g)
    )
    pred[pred == 3] = 4
    target[torch.rand(b, h, w, generator=g) < ignore] = IGNORE
    return pred, target


def _reference(pred: np.ndarray, target: np.ndarray, classes: int, ignore: int) -> dict:
    """Pixel-by-pixel counts with Python loops, then mmsegmentation's formulas."""
    inter, area_p, area_t = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
        if t == ignore:
            continue
        area_p[p] += 1
        area_t[t] += 1
        inter[p] += p == t
    union = area_p + area_t - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / area_t
    return {
        "iou": iou,
        "miou": np.nanmean(iou),
        "acc": acc,
        "macc": np.nanmean(acc),
        "aacc": inter.sum() / area_t.sum(),
    }


def test_matches_brute_force_reference_with_ignore_index() -> None:
    metric = SegmentationMetrics(C, ignore_index=IGNORE)
    preds, targets = [], []
    for seed in range(3):
        pred, target = _batch(seed=seed)
        metric.update(pred, target)
        preds.append(pred)
        targets.append(target)
    res = metric.compute()
    assert isinstance(res, SegmentationResult)
    ref = _reference(torch.cat(preds).numpy(), torch.cat(targets).numpy(), C, IGNORE)
    np.testing.assert_allclose(res.iou.numpy(), ref["iou"], rtol=1e-12)  # NaN at the same places
    np.testing.assert_allclose(res.class_accuracy.numpy(), ref["acc"], rtol=1e-12)
    assert res.miou == pytest.approx(ref["miou"], rel=1e-12)
    assert res.mean_class_accuracy == pytest.approx(ref["macc"], rel=1e-12)
    assert res.pixel_accuracy == pytest.approx(ref["aacc"], rel=1e-12)
    assert not torch.isnan(res.iou[4]) and torch.isnan(
        res.class_accuracy[4]
    )  # predicted only: IoU 0, no accuracy
    assert res.iou[4] == 0.0
    labelled = int((torch.cat(targets) != IGNORE).sum())
    assert res.confusion.sum() == labelled and res.confusion.dtype == torch.long
    # control: counting the ignored pixels as class 0 changes the figures
    unignored = [t.masked_fill(t == IGNORE, 0) for t in targets]
    ref2 = _reference(torch.cat(preds).numpy(), torch.cat(unignored).numpy(), C, IGNORE)
    assert abs(ref2["miou"] - res.miou) > 1e-3


def test_absent_class_is_left_out_of_miou() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    metric = SegmentationMetrics(4)
    metric.update(pred, target)
    res = metric.compute()
    # class 0: TP 1, union 2 -> 0.5; class 1: TP 2, union 3 -> 2/3; classes 2, 3 absent -> NaN, left out
    torch.testing.assert_close(res.iou[:2], torch.tensor([0.5, 2 / 3], dtype=torch.float64))
    assert torch.isnan(res.iou[2:]).all()
    assert res.iou_list() == pytest.approx([0.5, 2 / 3, None, None])  # JSON-able: None for the absent classes
    assert res.miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert res.pixel_accuracy == pytest.approx(3 / 4)
    assert res.mean_class_accuracy == pytest.approx((0.5 + 1.0) / 2)


def test_logits_equal_their_argmax_labels() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, C, 4, 5, generator=g)
    target = torch.randint(0, C, (2, 4, 5), generator=g)
    a, b = SegmentationMetrics(C), SegmentationMetrics(C)
    a.update(logits, target)
    b.update(logits.argmax(dim=1), target)
    assert torch.equal(a.confusion, b.confusion)
    c = SegmentationMetrics(C)
    c.update(logits.argmin(dim=1), target)  # control
    assert not torch.equal(a.confusion, c.confusion)


def test_merge_equals_one_metric_over_all_data() -> None:
    whole, first, second = SegmentationMetrics(C), SegmentationMetrics(C), SegmentationMetrics(C)
    for seed in range(4):
        pred, target = _batch(seed=seed)
        whole.update(pred, target)
        (first if seed < 2 else second).update(pred, target)
    assert not torch.equal(first.confusion, whole.confusion)  # control: one shard alone differs
    assert first.merge(second) is first
    assert torch.equal(first.confusion, whole.confusion)
    assert first.compute().miou == whole.compute().miou


def test_reset() -> None:
    metric = SegmentationMetrics(C)
    metric.update(*_batch())
    metric.reset()
    assert metric.confusion.sum() == 0
    with pytest.raises(ValueError, match="at least one labelled pixel"):
        metric.compute()


def test_matches_torchmetrics_jaccard_and_accuracy() -> None:
    ours = SegmentationMetrics(C, ignore_index=IGNORE)
    macro = MulticlassJaccardIndex(C, average="macro", ignore_index=IGNORE)
    per_class = MulticlassJaccardIndex(C, average="none", ignore_index=IGNORE)
    confmat = MulticlassConfusionMatrix(C, ignore_index=IGNORE)
    micro_acc = MulticlassAccuracy(C, average="micro", ignore_index=IGNORE)
    for seed in range(3):
        pred, target = _batch(seed=seed)
        ours.update(pred, target)
        for m in (macro, per_class, confmat, micro_acc):
            m.update(pred, target)
    res = ours.compute()
    assert torch.equal(res.confusion, confmat.compute().long())
    # torchmetrics also leaves classes absent from both out of the macro mean; per class it writes 0 for them
    assert res.miou == pytest.approx(float(macro.compute()), rel=1e-6)
    present = ~torch.isnan(res.iou)
    torch.testing.assert_close(res.iou[present].float(), per_class.compute()[present])
    assert res.pixel_accuracy == pytest.approx(float(micro_acc.compute()), rel=1e-6)


def test_mean_class_accuracy_matches_torchmetrics_when_every_class_is_in_the_target() -> None:
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, C, (2, 8, 8), generator=g)
    pred = torch.where(
        torch.rand(2, 8, 8, generator=g) < 0.5, target, torch.randint(0, C, (2, 8, 8), generator=g)
    )
    ours = SegmentationMetrics(C)
    ours.update(pred, target)
    macro = MulticlassAccuracy(C, average="macro")(pred, target)
    assert ours.compute().mean_class_accuracy == pytest.approx(float(macro), rel=1e-6)


def test_matches_torchmetrics_mean_iou_on_one_image() -> None:
    """torchmetrics' MeanIoU averages per-image scores; on a single image (no ignored pixel) it is our mIoU."""
    pred, target = _batch(b=1, ignore=0.0, seed=5)
    ours = SegmentationMetrics(C)
    ours.update(pred, target)
    theirs = MeanIoU(num_classes=C, input_format="index")
    theirs.update(pred, target)
    assert ours.compute().miou == pytest.approx(float(theirs.compute()), rel=1e-6)


@pytest.mark.parametrize("bad", [C, 7, -1])
def test_target_label_out_of_range_is_refused(bad: int) -> None:
    pred, target = _batch()
    target[0, 0, 0] = bad
    with pytest.raises(
        ValueError, match=rf"target labels must be in \[0, {C}\) or ignore_index=255, got {bad}"
    ):
        SegmentationMetrics(C).update(pred, target)
    target[0, 0, 0] = IGNORE  # control: the ignore index itself is fine
    SegmentationMetrics(C).update(pred, target)


def test_input_errors() -> None:
    pred, target = _batch()
    metric = SegmentationMetrics(C)
    bad_pred = pred.clone()
    bad_pred[0, 0, 0] = C
    with pytest.raises(ValueError, match=r"pred labels must be in \[0, 5\), got 5"):
        metric.update(bad_pred, target)
    with pytest.raises(ValueError, match="pred labels must have the shape of target"):
        metric.update(pred[:, :-1], target)
    with pytest.raises(ValueError, match=r"pred logits must have shape \(B, C=5, \.\.\.\)"):
        metric.update(torch.randn(3, C + 1, 6, 7), target)
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        metric.update(pred, target.float())
    with pytest.raises(TypeError, match="pred must be a torch.Tensor"):
        metric.update(pred.tolist(), target)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target must hold at least one item"):
        metric.update(pred[:0], target[:0])
    assert metric.confusion.sum() == 0  # nothing was counted by the failed calls


def test_constructor_and_merge_errors() -> None:
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got True"):
        SegmentationMetrics(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_index must be an int, got float"):
        SegmentationMetrics(C, ignore_index=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ignore_index must not be a class id \(outside \[0, 5\)\), got 3"):
        SegmentationMetrics(C, ignore_index=3)
    SegmentationMetrics(C, ignore_index=-100)  # a negative ignore index is fine
    with pytest.raises(ValueError, match="other must have num_classes=5, ignore_index=255"):
        SegmentationMetrics(C).merge(SegmentationMetrics(C + 1))
    with pytest.raises(TypeError, match="other must be a SegmentationMetrics"):
        SegmentationMetrics(C).merge(object())  # type: ignore[arg-type]


def test_all_reduce_is_a_no_op_in_one_process() -> None:
    metric = SegmentationMetrics(C)
    metric.update(*_batch())
    before = metric.confusion.clone()
    assert metric.all_reduce() is metric
    assert torch.equal(metric.confusion, before)


WORKER = textwrap.dedent(
    """
    import json, sys
    from safetensors.torch import load_file
    from vlblocks.metrics import SegmentationMetrics
    from vlblocks.training import cleanup_distributed, setup_distributed

    info = setup_distributed(device="cpu", timeout_s=300)  # a loaded machine may stall a rank for a minute
    metric = SegmentationMetrics(5)
    for seed in range(info.rank, 4, info.world_size):  # rank 0: batches 0, 2; rank 1: batches 1, 3
        batch = load_file(f"{sys.argv[1]}/batch{seed}.safetensors")
        metric.update(batch["pred"], batch["target"])
    local = metric.confusion.clone()
    metric.all_reduce()
    with open(f"{sys.argv[1]}/rank{info.rank}.json", "w") as f:
        json.dump({"local": local.tolist(), "reduced": metric.confusion.tolist()}, f)
    cleanup_distributed()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduce_over_two_gloo_processes(tmp_path) -> None:
    """Two ranks (launched as torchrun would, by their environment) each count half the batches."""
    whole = SegmentationMetrics(C)
    for seed in range(4):
        pred, target = _batch(seed=seed)
        save_file({"pred": pred, "target": target}, str(tmp_path / f"batch{seed}.safetensors"))
        whole.update(pred, target)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=420)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for res in results:
        assert torch.equal(torch.tensor(res["reduced"]), whole.confusion)
    assert torch.equal(torch.tensor(results[0]["local"]) + torch.tensor(results[1]["local"]), whole.confusion)
    assert results[0]["local"] != results[1]["local"]  # control: the ranks saw different data


def test_uint8_masks_count_like_int64() -> None:
    """PNG and ShapesWorld masks are uint8; 255 * C must not overflow."""
    pred, target = _batch(seed=7)
    a, b = SegmentationMetrics(C), SegmentationMetrics(C)
    a.update(pred, target)
    b.update(pred.to(torch.uint8), target.to(torch.uint8))
    assert torch.equal(a.confusion, b.confusion) and a.confusion.sum() > 0
