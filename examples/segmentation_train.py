"""Semantic segmentation heads on a frozen backbone: linear, conv, mask transformer, mask transformer with shared Q-K.

The comparison of the course report (four heads on frozen DINOv2 patch features), runnable offline: by default it
generates ShapesWorld with colour-shape masks (19 classes), pretrains a tiny ViT (conv stem, 4-pixel patches) for
about 2.5 minutes of CPU on ShapesWorld *shape* masks of a separate world (background / circle / square / triangle,
one linear classifier per patch token; cached in the run folder and reused), freezes it, and trains a head on its
patch tokens to the 19 colour-shape classes. `--head all` computes the frozen features once and trains the four
heads on them, then prints the table.

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
(runs/segmentation): run_config.json, backbone.safetensors (the pretrained tiny ViT), metrics.jsonl, checkpoint/
(one folder per head with --head all), summary.json, miou.png and class_iou.png (matplotlib), predictions.png.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from vlblocks import training as T
from vlblocks.data import ShapesWorld
from vlblocks.encoders import ImageEncoder
from vlblocks.heads import ConvSegHead, LinearSegHead, MaskTransformerSegHead
from vlblocks.metrics import SegmentationMetrics
from vlblocks.models import SegmentationModel

HEADS = ("linear", "conv", "transformer", "transformer-shared-qk")
IGNORE = 255
CONTROL = ("output_dir", "resume", "overwrite", "eval_only", "stop_after", "threads", "device", "save_every")


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-root", type=Path, default=None, help="images/ + masks/ folder (default: ShapesWorld)"
    )
    g.add_argument("--mask-classes", choices=["shape", "color_shape", "instance"], default="color_shape")
    g.add_argument(
        "--num-scenes", type=T.positive_int, default=1000, help="ShapesWorld train scenes (val: 1/10)"
    )
    g.add_argument("--image-size", type=T.positive_int, default=64)
    g.add_argument("--num-classes", type=T.positive_int, default=None, help="with --data-root")
    g = p.add_argument_group("backbone")
    g.add_argument(
        "--backbone", default="tiny-vit", help="tiny-vit (pretrained here) | a timm / HF name or path"
    )
    g.add_argument(
        "--patch-size", type=T.positive_int, default=4, help="tiny-vit pixels per token (power of 2)"
    )
    g.add_argument("--dim", type=T.positive_int, default=64, help="tiny-vit width")
    g.add_argument("--depth", type=T.positive_int, default=2, help="tiny-vit layers")
    g.add_argument("--pretrain-epochs", type=T.nonneg_int, default=20, help="tiny-vit shape-mask epochs")
    g.add_argument("--pretrain-lr", type=T.positive_float, default=3e-3)
    g.add_argument("--num-layers", type=T.positive_int, default=1, help="last layers' tokens the head reads")
    g = p.add_argument_group("heads")
    g.add_argument("--head", choices=[*HEADS, "all"], default="transformer")
    g.add_argument("--head-depth", type=T.positive_int, default=2, help="mask transformer blocks")
    g.add_argument("--head-heads", type=T.positive_int, default=4, help="mask transformer attention heads")
    g.add_argument(
        "--conv-hidden", type=T.nonneg_int, default=0, help="conv head hidden channels (0: one conv)"
    )
    g.add_argument(
        "--mask-norm-gain",
        type=T.positive_float,
        default=3.0,
        help="mask transformer: initial gain of the LayerNorm over classes (Segmenter: 1)",
    )
    T.add_run_args(p, task="segmentation", epochs=10, batch_size=32, lr=5e-3)
    args = p.parse_args(argv)
    if args.data_root is not None and args.num_classes is None:
        p.error("--data-root needs --num-classes")
    if args.backbone == "tiny-vit" and (
        args.image_size % args.patch_size or args.patch_size & (args.patch_size - 1)
    ):
        p.error(
            f"--patch-size {args.patch_size} must be a power of 2 dividing --image-size {args.image_size}"
        )
    if args.resume or args.eval_only:  # a run folder describes itself: its own flags win
        args = T.restore_run_args(args, keep=CONTROL, error=p.error)
    return args


# ----------------------------------------------------------------------------- data, backbone, heads


def load_folder(root: Path, size: int, val: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) uint8 and masks (N, S, S) long of every tenth (val) or the other files of root."""
    from PIL import Image

    from vlblocks.data import load_image

    files = sorted((root / "images").glob("*.*"))
    if not files:
        raise SystemExit(f"--data-root {root}: no images in {root / 'images'}")
    files = [f for k, f in enumerate(files) if (k % 10 == 9) == val]
    images, masks = [], []
    for f in files:
        image = load_image(f).resize((size, size), Image.BILINEAR)
        mask = Image.open(root / "masks" / f"{f.stem}.png").resize((size, size), Image.NEAREST)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))  # (S, S, 3) -> (3, S, S)
        masks.append(torch.from_numpy(np.array(mask).astype(np.int64)))  # (S, S) class ids
    return torch.stack(images), torch.stack(masks)


def load_data(args) -> dict:
    """{"train": (images, masks), "val": (images, masks), "class_names"}."""
    if args.data_root is not None:
        names = [f"class {c}" for c in range(args.num_classes)]
        return {s: load_folder(args.data_root, args.image_size, s == "val") for s in ("train", "val")} | {
            "class_names": names
        }
    out = {}
    for split, n in (("train", args.num_scenes), ("val", max(args.num_scenes // 10, 50))):
        world = ShapesWorld(split, num_scenes=n, image_size=args.image_size, seed=args.seed)
        view = world.segmentation(args.mask_classes)
        masks = torch.stack([view[i]["mask"] for i in range(len(view))])
        out[split], out["class_names"] = (world.images, masks), list(view.class_names)
    return out


def pixels(images: torch.Tensor, config) -> torch.Tensor:
    return config.normalize(images.float() / 255)


def conv_stem_class():
    """timm PatchEmbed whose projection is stride-2 3x3 convolutions (Xiao et al. 2021, "Early convolutions help
    transformers see better"), as in vit_classify.py: with it a from-scratch tiny ViT learns shapes in minutes."""
    from timm.layers import PatchEmbed

    class ConvStem(PatchEmbed):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            dim, c, layers = kwargs["embed_dim"], kwargs.get("in_chans", 3), []
            stages = self.patch_size[0].bit_length() - 1  # patch 4: (B, 3, S, S) -> (B, C, S/4, S/4)
            for i in range(stages):
                out = max(16, dim // 2 ** (stages - i))
                layers += [nn.Conv2d(c, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                c = out
            self.proj = nn.Sequential(*layers, nn.Conv2d(c, dim, 1))  # (B, D, S/p, S/p)

    return ConvStem


def build_backbone(args, out: Path, dist, say) -> ImageEncoder:
    """A hub / timm encoder, or the tiny ViT pretrained on ShapesWorld shape masks (cached in the run folder)."""
    if args.backbone != "tiny-vit":
        return ImageEncoder.from_pretrained(args.backbone, image_size=args.image_size)
    from timm.models.vision_transformer import VisionTransformer

    T.seed_everything(args.seed)
    vit = VisionTransformer(
        img_size=args.image_size,
        patch_size=args.patch_size,
        embed_dim=args.dim,
        depth=args.depth,
        num_heads=4,
        num_classes=0,
        embed_layer=conv_stem_class(),
    )
    encoder = ImageEncoder(vit)
    cached = out / "backbone.safetensors"
    if cached.exists():
        load_model(encoder, cached)
        say(f"backbone: reusing the pretrained tiny ViT in {cached}")
        return encoder
    # pretraining: a separate world (seed + 1), its *shape* masks (background, circle, square, triangle), one
    # linear classifier per patch token: the task teaches each token the shape of the object it lies on
    world = ShapesWorld("train", num_scenes=args.num_scenes, image_size=args.image_size, seed=args.seed + 1)
    images, masks = pixels(world.images, encoder.image_config), world.masks.long()  # (N, 3, S, S), (N, S, S)
    model = torch.nn.ModuleDict({"encoder": encoder, "decoder": LinearSegHead(encoder.dim, 4)})
    steps = args.pretrain_epochs * (len(images) // 32)
    optimizer = T.build_optimizer(model, lr=args.pretrain_lr, weight_decay=0.05)
    scheduler = T.build_scheduler(optimizer, total_steps=max(steps, 1), warmup_steps=steps // 20)
    t0, c0, grid, losses = time.perf_counter(), time.process_time(), vit.patch_embed.grid_size, []
    for epoch in range(args.pretrain_epochs):
        batches = T.shard_batches(len(images), per_batch=32, seed=args.seed + 7, epoch=epoch)
        for idx in T.progress(
            batches, desc=f"pretrain {epoch + 1}/{args.pretrain_epochs}", enabled=dist.is_main
        ):
            tokens = encoder(images[idx]).tokens[:, encoder.num_prefix_tokens :]  # (B, N, D)
            logits = model["decoder"](tokens, grid=grid, size=tuple(masks.shape[-2:]))  # (B, 4, S, S)
            loss = F.cross_entropy(logits, masks[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    say(
        f"backbone: tiny ViT pretrained on ShapesWorld shape masks, {steps} steps, final loss "
        f"{sum(losses[-20:]) / max(1, len(losses[-20:])):.3f} ({time.perf_counter() - t0:.0f}s wall, "
        f"{time.process_time() - c0:.0f}s CPU)"
    )
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
    """SegmentationResult over this rank's share of the validation set, counts summed across ranks."""
    head.eval()
    metric = SegmentationMetrics(num_classes, ignore_index=IGNORE)
    for s in range(dist.rank * batch, len(feats), batch * dist.world_size):
        metric.update(
            head(feats[s : s + batch], grid=grid, size=tuple(masks.shape[-2:])), masks[s : s + batch]
        )
    head.train()
    return metric.all_reduce().compute() if dist.world_size > 1 else metric.compute()


# ----------------------------------------------------------------------------- training one head


def train_head(kind, data, feats, grid, args, out: Path, dist, say) -> list[dict]:
    """Train one head on the frozen features; returns its per-epoch rows (also appended to metrics.jsonl)."""
    (train_x, val_x), (train_y, val_y) = feats, (data["train"][1], data["val"][1])
    num_classes = len(data["class_names"])
    T.seed_everything(args.seed)
    head = build_head(kind, train_x.shape[-1], num_classes, args)
    ckpt = out / ("checkpoint" if args.head != "all" else f"checkpoint-{kind}")
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size) // dist.world_size
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_x)} training images are too few for {dist.world_size} processes")
    total = min(args.epochs * steps_per_epoch, args.max_steps or 10**12)
    optimizer = T.build_optimizer(head, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = T.build_scheduler(
        optimizer, total_steps=total, warmup_steps=T.warmup_steps_for(args.warmup, total)
    )
    state = {"step": 0, "loss_sum": 0.0, "loss_count": 0}
    if args.resume and T.has_checkpoint(ckpt):
        state = T.read_checkpoint_state(ckpt)
        T.load_checkpoint(ckpt, model=head, optimizer=optimizer, scheduler=scheduler)
        say(f"{kind}: resumed from {ckpt} at step {state['step']}")
    ddp, log = T.wrap_ddp(head, dist), T.MetricLogger(out / "metrics.jsonl", rank=dist.rank)
    n_params = sum(p.numel() for p in head.parameters())
    say(f"head {kind}: {n_params:,} parameters, {total} steps")
    history = [r for r in _rows(out) if r.get("head") == kind and 0 < r["step"] <= state["step"]]
    if state["step"] == 0:  # the untrained head: the baseline the curves start from
        result = evaluate(head, val_x, val_y, grid, num_classes, dist)
        log.log(
            head=kind,
            epoch=0,
            step=0,
            miou=result.miou,
            pixel_accuracy=result.pixel_accuracy,
            iou=ious(result),
        )
    step, run_steps, epoch0, first = state["step"], 0, *T.resume_position(state["step"], steps_per_epoch)
    with T.stop_on_signal() as stop:
        for epoch in range(epoch0, args.epochs):
            batches = T.shard_batches(
                len(train_x),
                per_batch=args.batch_size,
                seed=args.seed,
                epoch=epoch,
                rank=dist.rank,
                world_size=dist.world_size,
            )
            t_epoch, bar = (
                time.perf_counter(),
                T.progress(
                    range(first if epoch == epoch0 else 0, steps_per_epoch),
                    desc=f"{kind} {epoch + 1}/{args.epochs}",
                    enabled=dist.is_main,
                ),
            )
            for b in bar:
                if step >= total:
                    break
                idx = batches[b]
                logits = ddp(train_x[idx], grid=grid, size=tuple(train_y.shape[-2:]))  # (B, C, H, W)
                loss = F.cross_entropy(logits, train_y[idx], ignore_index=IGNORE)
                decision = T.agree(loss, stop=stop.requested or run_steps + 1 == args.stop_after)
                if decision.nonfinite:
                    raise SystemExit(f"non-finite loss at step {step} of the {kind} head: stopping")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                state.update(loss_sum=state["loss_sum"] + decision.loss, loss_count=state["loss_count"] + 1)
                bar.set_postfix(loss=f"{decision.loss:.3f}")
                step, run_steps, state["step"] = step + 1, run_steps + 1, step + 1
                if decision.stop:
                    break
                if args.save_every and step % args.save_every == 0 and dist.is_main:
                    T.save_checkpoint(ckpt, model=head, optimizer=optimizer, scheduler=scheduler, state=state)
            if (step % steps_per_epoch == 0 or step >= total) and state["loss_count"]:
                result = evaluate(head, val_x, val_y, grid, num_classes, dist)
                row = {
                    "head": kind,
                    "epoch": epoch + 1,
                    "step": step,
                    "loss": state["loss_sum"] / state["loss_count"],
                    "miou": result.miou,
                    "pixel_accuracy": result.pixel_accuracy,
                    "time_s": time.perf_counter() - t_epoch,
                }
                log.log(**row, iou=ious(result))
                history.append(row)
                say(T.format_table([row]) if len(history) == 1 else T.format_table([row]).splitlines()[-1])
                state.update(loss_sum=0.0, loss_count=0)
            if dist.is_main:
                T.save_checkpoint(ckpt, model=head, optimizer=optimizer, scheduler=scheduler, state=state)
            if step >= total or stop.requested or (args.stop_after and run_steps >= args.stop_after):
                break
    return history if step >= total else []


def ious(result) -> list[float | None]:
    """Per-class IoU as JSON (None for a class absent from prediction and target)."""
    return [None if math.isnan(v) else v for v in result.iou.tolist()]


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return T.read_jsonl(path) if path.exists() else []


# ----------------------------------------------------------------------------- main and the report


def setup(args, out: Path, dist, say):
    t0 = time.perf_counter()
    data = load_data(args)
    say(
        f"data: {len(data['train'][0])} train / {len(data['val'][0])} val images, {len(data['class_names'])} classes "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    backbone = build_backbone(args, out, dist, say)
    model = SegmentationModel(backbone, torch.nn.Identity(), num_layers=args.num_layers)
    config = backbone.image_config
    feats = [extract(model, data[s][0], config) for s in ("train", "val")]
    grid = feats[0][1]
    say(
        f"features: {tuple(feats[0][0].shape)} frozen patch tokens on a {grid[0]}x{grid[1]} grid "
        f"({time.perf_counter() - t0:.0f}s so far)"
    )
    return data, (feats[0][0], feats[1][0]), grid, model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = T.setup_distributed(device="cpu" if args.device != "cuda" else "cuda")
    say = lambda *a: T.say(*a, enabled=dist.is_main)  # noqa: E731
    out = Path(args.output_dir)
    if not args.eval_only:
        try:
            T.prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite, main=dist.is_main)
        except T.RunFolderError as err:
            raise SystemExit(str(err)) from None
        T.barrier()
        if dist.is_main:
            T.save_run_config(out, task="segmentation", args=args)
    t0 = time.perf_counter()
    data, feats, grid, model = setup(args, out, dist, say)
    kinds = HEADS if args.head == "all" else (args.head,)
    finals, heads = {}, {}
    for kind in kinds:
        if args.eval_only:
            heads[kind] = build_head(kind, feats[0].shape[-1], len(data["class_names"]), args)
            ckpt = out / ("checkpoint" if args.head != "all" else f"checkpoint-{kind}")
            T.load_checkpoint(ckpt, model=heads[kind])
        else:
            if not train_head(kind, data, feats, grid, args, out, dist, say):
                say(f"stopped; checkpoints in {out}; continue with --resume")
                return 0
            heads[kind] = build_head(kind, feats[0].shape[-1], len(data["class_names"]), args)
            T.load_checkpoint(
                out / ("checkpoint" if args.head != "all" else f"checkpoint-{kind}"), model=heads[kind]
            )
        finals[kind] = evaluate(heads[kind], feats[1], data["val"][1], grid, len(data["class_names"]), dist)
    if dist.is_main:
        report(args, data, feats[1], grid, heads, finals, out, model)
        say(f"done in {time.perf_counter() - t0:.0f}s wall, {time.process_time():.0f}s CPU; outputs in {out}")
    T.cleanup_distributed()
    return 0


def report(args, data, val_x, grid, heads, finals, out: Path, model) -> None:
    """The heads' table, summary.json, mIoU / per-class IoU curves and the predictions picture."""
    untrained = {r["head"]: r["miou"] for r in _rows(out) if r.get("epoch") == 0}
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
    summary = {
        "heads": rows,
        "class_names": data["class_names"],
        "iou": {k: ious(r) for k, r in finals.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves([r for r in _rows(out) if "epoch" in r], data["class_names"], out)
    overlay_grid(data["val"], val_x, grid, heads, model.backbone.image_config, data["class_names"]).save(
        out / "predictions.png"
    )


def plot_curves(history: list[dict], class_names: list[str], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("curves (miou.png, class_iou.png) need matplotlib: pip install vlblocks[viz]")
        return
    kinds = list(dict.fromkeys(r["head"] for r in history))
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in kinds:
        rows = [r for r in history if r["head"] == kind]
        ax.plot([r["epoch"] for r in rows], [r["miou"] for r in rows], marker="o", label=kind)
    ax.set(xlabel="epoch", ylabel="validation mIoU", title="mIoU per epoch")
    ax.legend()
    fig.savefig(out / "miou.png", dpi=100, bbox_inches="tight")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in history if r["head"] == kind]
        for c, name in enumerate(class_names):
            ax.plot(
                [r["epoch"] for r in rows],
                [r["iou"][c] for r in rows],
                label=name,
                color=plt.cm.tab20(c % 20),
            )
        ax.set(xlabel="epoch", ylabel="IoU", title=f"per-class IoU ({kind})", ylim=(0, 1))
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.savefig(out / "class_iou.png", dpi=100, bbox_inches="tight")
    plt.close("all")


def palette(n: int = 256) -> torch.Tensor:
    """(n, 3) uint8: a fixed, well spread colour per class (hue steps of the golden ratio)."""
    import colorsys

    rgb = [colorsys.hsv_to_rgb((c * 0.618) % 1, 0.9, 0.95 - 0.25 * (c % 2)) for c in range(n)]
    return (torch.tensor(rgb) * 255).to(torch.uint8)


def colorize(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, S, S): every class painted in its palette colour over the image (70%); background and ignored
    pixels show the image darkened, so an object predicted as background stands out dark."""
    painted = palette()[mask.clamp(0, 255)].permute(2, 0, 1).float()  # (S, S, 3) -> (3, S, S)
    keep = ((mask == 0) | (mask == IGNORE)).unsqueeze(0)
    return torch.where(keep, 0.35 * image.float(), 0.3 * image.float() + 0.7 * painted).to(torch.uint8)


def legend(mask: torch.Tensor, class_names: list[str], min_pixels: int = 8) -> list[tuple[str, tuple]]:
    """The classes (background excluded) covering at least min_pixels of mask, each in its palette colour."""
    ids, counts = mask[mask != IGNORE].unique(return_counts=True)
    colours = palette()
    return [
        (class_names[c], tuple(colours[c].tolist()))
        for c, k in zip(ids.tolist(), counts.tolist())
        if c != 0 and k >= min_pixels
    ]


@torch.no_grad()
def overlay_grid(val, val_x, grid, heads, config, class_names: list[str], n: int = 6):
    """Per validation image: the image, the true mask and each head's predicted mask, overlaid; under each mask
    the names of the classes it shows, in their colours."""
    images, masks = val
    cells, texts = [], []
    for i in range(min(n, len(images))):
        cells += [images[i], colorize(masks[i], images[i])]
        texts += [[f"image {i}"], ["true", *legend(masks[i], class_names)]]
        for kind, head in heads.items():
            pred = head.eval()(val_x[i : i + 1], grid=grid, size=tuple(masks.shape[-2:])).argmax(1)[0]
            pred = torch.where(masks[i] == IGNORE, masks[i], pred)
            cells.append(colorize(pred, images[i]))
            texts.append([kind.replace("transformer-shared-qk", "shared-QK"), *legend(pred, class_names)])
    title = (
        "validation: true mask and each head's prediction; colour = class (named below), dark = background"
    )
    return T.image_grid(cells, texts, cols=2 + len(heads), cell=128, title=title)


if __name__ == "__main__":
    sys.exit(main())
