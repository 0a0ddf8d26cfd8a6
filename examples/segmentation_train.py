"""Semantic segmentation heads on a frozen backbone: linear, conv, mask transformer, mask transformer with shared Q-K.

The course report's comparison (four heads on frozen DINOv2 patch features), offline: by default ShapesWorld with
colour-shape masks (19 classes) and a tiny ViT (conv stem, 4-pixel patches) pretrained here for about 2.5 minutes of
CPU on image-level classification of a separate 6,000-scene world (--pretrain counts: how many objects of each
colour-shape class a scene holds; --pretrain masks / objects: shape masks / each object's box), cached in the run
folder, then frozen; a head learns the 19 classes from its patch tokens, standardised per channel. `--head all`
trains the four on the same frozen features and prints the table.

Commands:
    python examples/segmentation_train.py                          # ShapesWorld, tiny ViT, mask transformer head
    python examples/segmentation_train.py --head all --output-dir runs/segmentation-all   # the report's table
    python examples/segmentation_train.py --head linear --output-dir runs/seg-linear
    python examples/segmentation_train.py --eval-only              # re-evaluate runs/segmentation, rewrite its report
    python examples/segmentation_train.py --resume                 # continue runs/segmentation
    python examples/segmentation_train.py --backbone facebook/dinov2-small --data-root ~/data/voc \\
        --num-classes 21 --image-size 224 --head all --epochs 20 --batch-size 16 --lr 1e-3
    torchrun --nproc_per_node=2 examples/segmentation_train.py --output-dir runs/seg-ddp

--data-root holds images/ and masks/ (a mask is a PNG of class indices with the image's file stem; 255 is ignored);
every tenth file (sorted) is validation. ShapesWorld.export() writes such masks. Writes --output-dir
(runs/segmentation): run_config.json, backbone.safetensors (the pretrained tiny ViT), token_stats.safetensors
(the tokens' per-channel mean and std the heads read them standardised with), metrics.jsonl, checkpoint/
(one folder per head with --head all), summary.json, miou.png and class_iou.png (matplotlib), predictions.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from vlblocks import training as T
from vlblocks.data import ShapesWorld, load_segmentation_folder
from vlblocks.encoders import ImageEncoder
from vlblocks.encoders.conv_stem import conv_stem_vit
from vlblocks.heads import ConvSegHead, LinearSegHead, MaskTransformerSegHead
from vlblocks.metrics import SegmentationMetrics
from vlblocks.models import SegmentationModel
from vlblocks.models.shapes_backbone import PRETRAIN_TASKS, pretrain_on_shapes

HEADS = ("linear", "conv", "transformer", "transformer-shared-qk")
IGNORE = 255
CONTROL = T.RUN_CONTROL  # the flags a resumed / re-evaluated run takes from the command line


def parse_args(argv: list[str] | None = None):
    p, pos, nonneg, posf = T.make_parser(__doc__), T.positive_int, T.nonneg_int, T.positive_float
    g = p.add_argument_group("data")
    g.add_argument("--data-root", type=Path, help="images/ + masks/ folder (default: ShapesWorld)")
    g.add_argument("--mask-classes", choices=["shape", "color_shape", "instance"], default="color_shape")
    g.add_argument("--num-scenes", type=pos, default=1000, help="ShapesWorld train scenes (val: 1/10)")
    g.add_argument("--image-size", type=pos, default=64)
    g.add_argument("--num-classes", type=pos, help="with --data-root")
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", default="tiny-vit", help="tiny-vit (trained here), timm / HF name or path")
    g.add_argument("--patch-size", type=pos, default=4, help="tiny-vit pixels per token (power of 2)")
    g.add_argument("--dim", type=pos, default=64, help="tiny-vit width")
    g.add_argument("--depth", type=pos, default=2, help="tiny-vit layers")
    g.add_argument("--pretrain", choices=PRETRAIN_TASKS, default="counts", help="tiny-vit pretraining task")
    g.add_argument("--pretrain-scenes", type=pos, default=6000, help="scenes of the pretraining world")
    g.add_argument("--pretrain-epochs", type=nonneg, default=4, help="tiny-vit pretraining epochs")
    g.add_argument("--pretrain-lr", type=posf, default=3e-3)
    g.add_argument("--pretrain-batch-size", type=pos, default=16)
    g.add_argument("--min-object-tokens", type=posf, default=6.0, help="--pretrain counts: density cap 1/m")
    g.add_argument("--num-layers", type=pos, default=1, help="last layers' tokens the head reads")
    g.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="heads read the tokens standardised per channel (training-set mean and std)",
    )
    g = p.add_argument_group("heads")
    g.add_argument("--head", choices=[*HEADS, "all"], default="transformer")
    g.add_argument("--head-depth", type=pos, default=2, help="mask transformer blocks")
    g.add_argument("--head-heads", type=pos, default=4, help="mask transformer attention heads")
    g.add_argument("--conv-hidden", type=nonneg, default=0, help="conv head hidden channels (0: one conv)")
    g.add_argument("--mask-norm-gain", type=posf, default=3.0, help="mask transformers' LayerNorm gain")
    g.add_argument("--linear-lr", type=posf, default=1.0, help="the linear head's peak lr (a linear probe's)")
    T.add_run_args(p, task="segmentation", epochs=20, batch_size=32, lr=1e-2)
    args = p.parse_args(argv)
    if args.data_root is not None and args.num_classes is None:
        p.error("--data-root needs --num-classes")
    size, patch = args.image_size, args.patch_size
    if args.backbone == "tiny-vit" and (size % patch or patch & (patch - 1)):
        p.error(f"--patch-size {patch} must be a power of 2 dividing --image-size {size}")
    args.device = "cpu" if args.device == "auto" else args.device  # features and heads live on the CPU
    if args.resume or args.eval_only:  # a run folder describes itself: its own flags win
        args = T.restore_run_args(args, keep=CONTROL, error=p.error)
    return args


# ----------------------------------------------------------------------------- data, backbone, heads


def load_data(args) -> dict:
    """{"train": (images, masks), "val": (images, masks), "class_names"}: uint8 (N, 3, S, S), int64 (N, S, S)."""
    if args.data_root is not None:
        try:
            data = {
                s: load_segmentation_folder(args.data_root, image_size=args.image_size, val=s == "val")
                for s in ("train", "val")
            }
        except FileNotFoundError as err:
            T.usage_error(f"--data-root {args.data_root}: {err}")
        return data | {"class_names": [f"class {c}" for c in range(args.num_classes)]}
    out = {}
    for split, n in (("train", args.num_scenes), ("val", max(args.num_scenes // 10, 50))):
        world = ShapesWorld(split, num_scenes=n, image_size=args.image_size, seed=args.seed)
        view = world.segmentation(args.mask_classes)
        masks = torch.stack([view[i]["mask"] for i in range(len(view))])
        out[split], out["class_names"] = (world.images, masks), list(view.class_names)
    return out


def pixels(images: torch.Tensor, config) -> torch.Tensor:
    return config.normalize(images.float() / 255)


def build_backbone(args, out: Path, dist, say) -> ImageEncoder:
    """A hub / timm encoder, or the tiny ViT (conv stem) pretrained here by --pretrain (cached in the run folder):
    on a separate world (seed + 1) with one linear classifier on the patch tokens (vlblocks.models.shapes_backbone
    describes the three tasks)."""
    if args.backbone != "tiny-vit":
        return ImageEncoder.from_pretrained(args.backbone, image_size=args.image_size)
    T.seed_everything(args.seed)
    shape = dict(image_size=args.image_size, patch_size=args.patch_size, dim=args.dim, depth=args.depth)
    encoder, cached = conv_stem_vit(**shape, heads=4), out / "backbone.safetensors"
    if cached.exists():
        load_model(encoder, cached)
        say(f"backbone: reusing the pretrained tiny ViT in {cached}")
        return encoder
    world = ShapesWorld(
        "train", num_scenes=args.pretrain_scenes, image_size=args.image_size, seed=args.seed + 1
    )
    settings = dict(epochs=args.pretrain_epochs, lr=args.pretrain_lr, batch_size=args.pretrain_batch_size)
    settings |= dict(min_object_tokens=args.min_object_tokens, seed=args.seed + 7, patch_size=args.patch_size)
    pretrain_on_shapes(encoder, world, task=args.pretrain, **settings, show_progress=dist.is_main, say=say)
    if dist.is_main:
        save_model(encoder, str(cached))
    return encoder


def build_head(kind: str, dim: int, num_classes: int, args) -> torch.nn.Module:
    if kind == "linear":
        return LinearSegHead(dim, num_classes)
    if kind == "conv":
        return ConvSegHead(dim, num_classes, kernel_size=3, hidden_dim=args.conv_hidden or None)
    shared = kind == "transformer-shared-qk"
    head = MaskTransformerSegHead(
        dim, num_classes, depth=args.head_depth, heads=args.head_heads, shared_qk=shared, mlp_ratio=2.0
    )
    # the LayerNorm over C classes bounds the logits: with gain 1 the best a pixel can get is p = 0.83 for 19
    # classes (loss >= 0.19, mostly on background); Segmenter trains 160k steps for the gain to grow, we train 320
    nn.init.constant_(head.mask_norm.weight, args.mask_norm_gain)
    return head


@torch.no_grad()
def extract(model: SegmentationModel, images: torch.Tensor, config, batch: int = 64):
    """Frozen patch tokens (N, n, D) of all images, computed once, and their grid."""
    parts = [model.features(pixels(images[s : s + batch], config)) for s in range(0, len(images), batch)]
    return torch.cat([f.tokens for f in parts]), parts[0].grid


@torch.no_grad()
def evaluate(head, feats, masks, grid, num_classes: int, dist, batch: int = 64):
    """SegmentationResult of the validation set, each rank's confusion counts summed across ranks."""
    head.eval()
    metric = SegmentationMetrics(num_classes, ignore_index=IGNORE)
    for s in range(dist.rank * batch, len(feats), batch * dist.world_size):  # this rank's share of the images
        metric.update(
            head(feats[s : s + batch], grid=grid, size=tuple(masks.shape[-2:])), masks[s : s + batch]
        )
    head.train()
    return metric.all_reduce().compute() if dist.world_size > 1 else metric.compute()


# ----------------------------------------------------------------------------- training one head


def train_head(run: T.TrainingRun, kind: str, data: dict, feats, grid) -> nn.Module:
    """Train one head on the frozen features (its own checkpoint folder, resumable); returns the head."""
    args, (train_x, val_x), (train_y, val_y) = run.args, feats, (data["train"][1], data["val"][1])
    run.next_training(checkpoint_name(args, kind))
    T.seed_everything(args.seed)
    num_classes = len(data["class_names"])
    head = build_head(kind, train_x.shape[-1], num_classes, args)
    total = run.plan(len(train_x), per_batch=args.batch_size)
    lr = args.linear_lr if kind == "linear" else args.lr  # a linear probe needs a far larger rate
    run.track(model=head, **T.optimizer_for_run(head, args, total, lr=lr))
    run.restore()
    run.say(f"head {kind}: {sum(p.numel() for p in head.parameters()):,} parameters, {total} steps")
    if run.step == 0:  # the untrained head: the baseline the curves start from (epoch 0)
        result = evaluate(head, val_x, val_y, grid, num_classes, run.dist)
        scores = {"miou": result.miou, "pixel_accuracy": result.pixel_accuracy}
        run.log.log(head=kind, epoch=0, step=0, **scores, iou=result.iou_list())
    ddp = T.wrap_ddp(head, run.dist)
    for _, batches in run.epochs(len(train_x), per_batch=args.batch_size):
        for idx in run.progress(batches):
            logits = ddp(train_x[idx], grid=grid, size=tuple(train_y.shape[-2:]))  # (B, C, H, W)
            loss = F.cross_entropy(logits, train_y[idx], ignore_index=IGNORE)
            if not run.optimizer_step(loss, clip_norm=None):  # no clipping, as measured
                break
        if run.epoch_complete:
            result = evaluate(head, val_x, val_y, grid, num_classes, run.dist)
            metrics = {"head": kind, "miou": result.miou, "pixel_accuracy": result.pixel_accuracy}
            run.end_epoch(metrics, iou=result.iou_list())
        run.save()
    return head


def checkpoint_name(args, kind: str) -> str:
    return "checkpoint" if args.head != "all" else f"checkpoint-{kind}"


# ----------------------------------------------------------------------------- main and the report


def setup(args, out: Path, dist, say):
    """Data, the frozen backbone and the patch tokens of every image, computed once for all heads."""
    t0 = time.perf_counter()
    data = load_data(args)
    say(
        f"data: {len(data['train'][0])} train / {len(data['val'][0])} val images, {len(data['class_names'])} classes"
    )
    backbone = build_backbone(args, out, dist, say)
    model = SegmentationModel(backbone, nn.Identity(), num_layers=args.num_layers)
    (train_x, grid), (val_x, _) = (
        extract(model, data[s][0], backbone.image_config) for s in ("train", "val")
    )
    if args.standardize:  # per-channel statistics of the training tokens, as MAE's linear probe's BatchNorm
        mean, std = train_x.mean((0, 1)), train_x.std((0, 1)).clamp(min=1e-6)  # (D,)
        train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
        if dist.is_main:  # what a head of this run expects its tokens to be standardised with
            save_file({"mean": mean, "std": std}, str(out / "token_stats.safetensors"))
    say(
        f"features: {tuple(train_x.shape)} frozen patch tokens on a {grid[0]}x{grid[1]} grid "
        f"({time.perf_counter() - t0:.0f}s so far)"
    )
    return data, (train_x, val_x), grid, model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = HEADS if args.head == "all" else (args.head,)
    if args.eval_only:  # the heads of a finished run, re-evaluated from the folder alone
        if args.threads:
            torch.set_num_threads(args.threads)
        dist, out = T.setup_distributed(device="cpu"), Path(args.output_dir)
        data, feats, grid, model = setup(args, out, dist, print)
        heads = {k: build_head(k, feats[0].shape[-1], len(data["class_names"]), args) for k in kinds}
        for kind, head in heads.items():
            T.load_checkpoint(out / checkpoint_name(args, kind), model=head)
        report(args, data, feats[1], grid, heads, out, model, dist)
        return 0
    with T.start_run(args, task="segmentation") as run:
        run.save_config()
        data, feats, grid, model = setup(args, run.out, run.dist, run.say)
        heads = {}
        for kind in kinds:
            heads[kind] = train_head(run, kind, data, feats, grid)
            if run.code or run.step < run.total:  # stopped (Ctrl-C, --stop-after) or a non-finite loss
                return run.finish()
        report(args, data, feats[1], grid, heads, run.out, model, run.dist)
        run.say(f"{time.process_time():.0f}s of CPU time in this process")
        return run.finish()


def report(args, data, val_x, grid, heads, out: Path, model, dist) -> None:
    """The heads' final validation table, summary.json, mIoU / per-class IoU curves and the predictions picture."""
    val_y, names = data["val"][1], data["class_names"]
    finals = {k: evaluate(h, val_x, val_y, grid, len(names), dist) for k, h in heads.items()}
    if not dist.is_main:
        return
    log = T.read_jsonl(out / "metrics.jsonl", missing_ok=True)
    untrained = {r["head"]: r["miou"] for r in log if r.get("epoch") == 0}
    rows = [
        {
            "head": k,
            "untrained_miou": untrained.get(k),
            "miou": r.miou,
            "pixel_accuracy": r.pixel_accuracy,
            "mean_class_accuracy": r.mean_class_accuracy,
            "parameters": sum(p.numel() for p in heads[k].parameters()),
        }
        for k, r in finals.items()
    ]
    print("\n" + T.format_table(rows))
    summary = {"heads": rows, "class_names": names, "iou": {k: r.iou_list() for k, r in finals.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    curves = {k: [r for r in log if r.get("head") == k and "epoch" in r] for k in heads}
    miou = {k: ([r["epoch"] for r in rs], [r["miou"] for r in rs]) for k, rs in curves.items()}
    if T.plot_panels(
        out / "miou.png", {"mIoU per epoch": miou}, xlabel="epoch", ylabel="validation mIoU", marker="o"
    ):
        per_class = {
            f"per-class IoU ({k})": {
                c: ([r["epoch"] for r in rs], [r["iou"][i] for r in rs]) for i, c in enumerate(names)
            }
            for k, rs in curves.items()
        }
        T.plot_panels(out / "class_iou.png", per_class, xlabel="epoch", ylabel="IoU", ylim=(0, 1))
    overlay_grid(data["val"], val_x, grid, heads, names).save(out / "predictions.png")


@torch.no_grad()
def overlay_grid(val, val_x, grid, heads, class_names: list[str], n: int = 6):
    """The first n validation images, their true masks and each head's predicted mask, overlaid and labelled."""
    images, masks = val[0][:n], val[1][:n]
    preds = {
        k.replace("transformer-shared-qk", "shared-QK"): h.eval()(
            val_x[:n], grid=grid, size=tuple(masks.shape[-2:])
        ).argmax(1)
        for k, h in heads.items()
    }
    title = (
        "validation: true mask and each head's prediction; colour = class (named below), dark = background"
    )
    return T.mask_grid(images, masks, preds, class_names, ignore_index=IGNORE, title=title)


if __name__ == "__main__":
    sys.exit(main())
