"""ViT image classification: fine-tune a timm Vision Transformer (Dosovitskiy et al. 2021) fully, with LoRA (Hu et
al. 2022) or as a linear probe, and report the accuracy per epoch.

Runnable offline: by default it generates ShapesWorld's classification view (label: the shape of the object nearest
the image centre; 3 classes) and trains a tiny timm ViT from scratch on 2 CPU cores in a few minutes. A real run is
a flag: a timm name with --pretrained and an image folder (one sub-folder per class; train/ and val/ inside it are
used as the splits when present, else --val-fraction of each class is held out).

Commands:
    python examples/vit_classify.py                              # ShapesWorld, tiny ViT, full fine-tuning
    python examples/vit_classify.py --eval-only                  # re-evaluate runs/vit, rewrite its report
    python examples/vit_classify.py --resume                     # continue runs/vit from its last checkpoint
    python examples/vit_classify.py --ask scene.png              # class probabilities of the trained run
    python examples/vit_classify.py --model vit_small_patch16_224 --pretrained --image-dir ~/data/pets \\
        --peft lora --lora-r 8 --epochs 5 --batch-size 64 --lr 1e-3 --output-dir runs/vit-pets-lora
    python examples/vit_classify.py --model vit_small_patch16_224 --pretrained --peft linear-probe ...
    torchrun --nproc_per_node=2 examples/vit_classify.py --output-dir runs/vit-ddp

Writes --output-dir (runs/vit): run_config.json (so --eval-only / --resume / --ask need only the folder),
metrics.jsonl, checkpoint/ (safetensors + JSON: the whole model, LoRA factors included), summary.json and
predictions.png; with --peft lora also adapter/ (the LoRA factors in peft's format:
`peft.PeftModel.from_pretrained(timm_model, "runs/x/adapter")` reads it) and, with --peft lora / linear-probe,
trained_modules.safetensors (the head and the encoder's buffers): `load_peft_run` rebuilds the model from the base
weights and these two. A folder that holds a run is never overwritten: pass --resume or --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from vlblocks import training as T
from vlblocks.data import ShapesWorld, load_image
from vlblocks.data.augment import random_flips
from vlblocks.data.collate import stack_images
from vlblocks.data.image_folder import load_image_folder
from vlblocks.encoders import ImageEncoder
from vlblocks.heads import MLPHead
from vlblocks.models import TrainedView
from vlblocks.peft import apply_lora, load_adapter, mark_only_peft_trainable, save_adapter
from vlblocks.utils import count_parameters

__all__ = ["ViTClassifier", "build_model", "load_data", "load_peft_run", "load_run"]

# the flags that steer this invocation; a saved run's own flags win for the rest
CONTROL = (*T.RUN_CONTROL, "ask")
ADAPTER = "adapter"  # PEFT runs: the LoRA factors in peft's format
MODULES = "trained_modules.safetensors"  # PEFT runs: the other trained tensors


def parse_args(argv: list[str] | None = None):
    p, count, size, share = T.make_parser(__doc__), T.positive_int, T.nonneg_int, T.fraction
    g = p.add_argument_group("data")
    g.add_argument("--image-dir", type=Path, help="one sub-folder per class (default: ShapesWorld)")
    g.add_argument("--val-fraction", type=share, default=0.1, help="held out per class (--image-dir)")
    g.add_argument("--num-scenes", type=count, default=8000, help="ShapesWorld train scenes")
    g.add_argument("--val-scenes", type=count, default=500, help="ShapesWorld validation scenes")
    g.add_argument("--image-size", type=size, default=0, help="input side (0: 64 tiny, else the model's)")
    flips = "random horizontal / vertical flips"
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help=flips)
    g = p.add_argument_group("model")
    models = "tiny-vit | a timm name (vit_small_patch16_224) or folder"
    g.add_argument("--model", default="tiny-vit", help=models)
    g.add_argument("--pretrained", action="store_true", help="load the timm / hub weights")
    g.add_argument("--dim", type=count, default=64, help="tiny-vit width")
    g.add_argument("--depth", type=count, default=3, help="tiny-vit blocks")
    g.add_argument("--heads", type=count, default=4, help="tiny-vit heads")
    g.add_argument("--patch-size", type=count, default=8, help="tiny-vit pixels per patch side")
    stem = "tiny-vit: conv stem (Xiao et al. 2021) or patchify"
    g.add_argument("--stem", choices=["conv", "patch"], default="conv", help=stem)
    g.add_argument("--pool", choices=["cls", "mean"], default="cls", help="CLS token or mean of the patches")
    g.add_argument("--hidden-dim", type=size, default=0, help="head hidden width (0: linear head)")
    g.add_argument("--dropout", type=share, default=0.0, help="before the head's last layer")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--peft", choices=["full", "lora", "linear-probe"], default="full")
    g.add_argument("--lora-r", type=count, default=8)
    g.add_argument("--lora-alpha", type=T.positive_float, default=None, help="default 2 * r")
    g.add_argument("--lora-targets", default="qkv,proj", help="comma-separated module names / regexes")
    g.add_argument("--lr-decay", choices=["cosine", "linear", "none"], default="cosine")
    g.add_argument("--label-smoothing", type=share, default=0.0)
    T.add_run_args(p, task="vit", epochs=10, batch_size=32, lr=1e-3, weight_decay=0.05)
    p.add_argument("--ask", metavar="IMAGE", help="class probabilities of an image with the trained run")
    args = p.parse_args(argv)
    if args.image_dir is not None and not args.image_dir.is_dir():
        p.error(f"--image-dir {args.image_dir} is not a folder")
    if args.resume or args.eval_only or args.ask:  # a run folder describes itself: its own flags win
        args = T.restore_run_args(args, keep=CONTROL, error=p.error)
    return args


# ----------------------------------------------------------------------------- data and model


def load_data(args, size: int) -> tuple[dict, dict, list[str]]:
    """({"images": uint8 (N, 3, S, S), "labels": (N,)} for train and val, class names)."""
    if args.image_dir is None:
        train, val = (
            ShapesWorld(split, num_scenes=n, image_size=size, seed=args.seed).classification()
            for split, n in (("train", args.num_scenes), ("val", args.val_scenes))
        )
        views = [(train.world.images, train.labels()), (val.world.images, val.labels())]
        split = [{"images": x, "labels": torch.tensor(y)} for x, y in views]  # (N, 3, S, S) uint8
        return split[0], split[1], list(train.class_names)
    try:  # one sub-folder per class; train/ and val/ inside it, else --val-fraction of each class held out
        return load_image_folder(args.image_dir, size, val_fraction=args.val_fraction, seed=args.seed)
    except ValueError as err:
        raise SystemExit(f"--image-dir {err}") from None


class ViTClassifier(nn.Module):
    """Image encoder -> CLS token (B, D) -> MLPHead -> logits (B, C)."""

    def __init__(
        self, encoder: ImageEncoder, num_classes: int, *, hidden_dim: int, dropout: float, pool: str = "cls"
    ) -> None:
        super().__init__()
        self.encoder, self.pool = encoder, pool
        self.head = MLPHead(encoder.out_dim, num_classes, hidden_dim=hidden_dim or None, dropout=dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.encoder(pixel_values)
        patches = out.tokens[:, self.encoder.num_prefix_tokens :]  # (B, N, D)
        pooled = out.cls if self.pool == "cls" else patches.mean(1)  # (B, D)
        return self.head(pooled)  # (B, C)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> normalised float pixels."""
        return self.encoder.image_config.normalize(images.float() / 255)


def build_model(args, num_classes: int, *, pretrained: bool | None = None) -> ViTClassifier:
    """The classifier the flags describe, with LoRA injected for --peft lora (what trains is set in main)."""
    if args.model == "tiny-vit" and getattr(args, "stem", "patch") == "conv":
        from vlblocks.encoders.conv_stem import conv_stem_vit

        shape = dict(patch_size=args.patch_size, dim=args.dim, depth=args.depth, heads=args.heads)
        encoder = conv_stem_vit(image_size=args.image_size or 64, **shape)
    elif args.model == "tiny-vit":
        shape = dict(dim=args.dim, depth=args.depth, heads=args.heads, patch_size=args.patch_size)
        encoder = ImageEncoder.tiny("vit", image_size=args.image_size or 64, **shape)
    else:
        pretrained = args.pretrained if pretrained is None else pretrained
        size = args.image_size or None  # None: the model's own input side
        encoder = ImageEncoder.from_pretrained(args.model, pretrained=pretrained, image_size=size)
    pool = getattr(args, "pool", "cls")
    model = ViTClassifier(encoder, num_classes, hidden_dim=args.hidden_dim, dropout=args.dropout, pool=pool)
    if args.peft == "lora":
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        alpha = args.lora_alpha or 2.0 * args.lora_r
        try:
            apply_lora(model.encoder, targets, r=args.lora_r, alpha=alpha)
        except ValueError as err:
            raise SystemExit(f"--lora-targets: {err}") from None
    return model


def configure_training(model: ViTClassifier, peft: str) -> None:
    """full: everything trains; lora: LoRA factors + head; linear-probe: the head on the frozen encoder."""
    if peft == "linear-probe":
        model.encoder.freeze()
    elif peft == "lora":
        mark_only_peft_trainable(model, extra="head")


def load_run(folder: str | Path) -> tuple[ViTClassifier, dict]:
    """The trained model of a vit_classify run folder (eval mode) and its run_config."""
    config = T.load_run_config(folder, task="vit")
    args = argparse.Namespace(**config["args"])
    model = build_model(args, len(config["class_names"]), pretrained=False)
    T.load_checkpoint(Path(folder) / "checkpoint", model=model, restore_rng=False)
    return model.eval(), config


def save_peft(model: ViTClassifier, run: T.TrainingRun) -> None:
    """Beside each checkpoint of a PEFT run (rank 0; none after a non-finite loss): --peft lora: the LoRA factors
    of the timm / HF model as a peft adapter folder (keys `base_model.model.blocks.0.attn.qkv.lora_A.weight`,
    ...); lora and linear-probe: the other trained tensors, written atomically."""
    args, out = run.args, run.out
    if args.peft == "full" or not run.dist.is_main or run.code:
        return
    if args.peft == "lora":
        base = None if args.model == "tiny-vit" else args.model
        save_adapter(model.encoder.model, out / ADAPTER, base_model_name_or_path=base)
    # the other trained tensors: the parameters that train (the head) and every buffer (e.g. the conv stem's
    # BatchNorm statistics, which move in train mode)
    trained = {k: v.cpu().contiguous() for k, v in TrainedView(model).state_dict().items()}
    save_file(trained, out / (MODULES + ".tmp"))
    os.replace(out / (MODULES + ".tmp"), out / MODULES)


def load_peft_run(folder: str | Path) -> tuple[ViTClassifier, dict]:
    """A --peft lora / linear-probe run rebuilt without its checkpoint: the base model (the seeded init of a
    from-scratch run, as in `main`, or the pretrained weights), then adapter/ and trained_modules.safetensors."""
    config = T.load_run_config(folder, task="vit")
    if config["args"]["peft"] == "full":
        raise ValueError(f"{folder} is a full fine-tuning run: load it with load_run")
    args = argparse.Namespace(**{**config["args"], "peft": "full"})  # no LoRA yet: load_adapter adds it
    T.seed_everything(args.seed)
    model = build_model(args, len(config["class_names"]))
    if config["args"]["peft"] == "lora":
        load_adapter(model.encoder.model, Path(folder) / ADAPTER)
    result = model.load_state_dict(load_file(Path(folder) / MODULES), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{Path(folder) / MODULES} holds keys the model lacks: {result.unexpected_keys[:5]}")
    return model.eval(), config


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: ViTClassifier, data: dict, dist, batch_size: int = 256) -> dict:
    """Accuracy, per-class accuracy and predictions on the whole split, gathered across ranks."""
    was_training = model.training
    model.eval()
    idx = list(range(dist.rank, len(data["labels"]), dist.world_size))
    preds = []
    for k in range(0, len(idx), batch_size):
        chunk = idx[k : k + batch_size]
        images = data["images"][chunk].to(next(model.parameters()).device)
        preds += model(model.preprocess(images)).argmax(-1).tolist()
    model.train(was_training)
    preds, idx = T.gather_lists(preds), T.gather_lists(idx)
    order = sorted(range(len(idx)), key=idx.__getitem__)
    preds = [preds[i] for i in order]
    labels = data["labels"].tolist()
    hits = {c: [p == y for p, y in zip(preds, labels) if y == c] for c in sorted(set(labels))}
    per_class = {c: sum(h) / len(h) for c, h in hits.items()}
    accuracy = sum(p == y for p, y in zip(preds, labels)) / len(labels)
    return {"accuracy": accuracy, "per_class": per_class, "predictions": preds}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ask or args.eval_only:
        return use_saved_run(args)
    with T.start_run(args, task="vit") as run:
        size = build_model(args, 1).encoder.image_config.size  # the model's input side, for the data
        train, val, classes = load_data(args, size)
        n_train = len(train["labels"])
        run.say(
            f"data: {n_train} train / {len(val['labels'])} val images, {len(classes)} classes, "
            f"{size}px ({time.perf_counter() - run.t0:.1f}s)"
        )
        T.seed_everything(args.seed)  # the model's init does not depend on the data
        model = build_model(args, len(classes)).to(run.dist.device)
        configure_training(model, args.peft)
        run.save_config(class_names=classes, image_size=size)
        try:
            total = run.plan(n_train, per_batch=args.batch_size, drop_last=True)  # full batches only
        except ValueError:  # fewer images than one batch on every process
            message = f"--batch-size {args.batch_size} is larger than the {n_train} train images"
            raise SystemExit(message) from None
        run.track(model=model, **T.optimizer_for_run(model, args, total))
        run.restore()
        trainable, n_params, percent = count_parameters(model)
        run.say(
            f"model: {args.model} ({args.peft}), {n_params:,} parameters, {trainable:,} trainable ({percent:.1f}%)"
        )
        ddp = T.wrap_ddp(model, run.dist)
        for _, batches in run.epochs(n_train, per_batch=args.batch_size):
            for indices in run.progress(batches):
                images = random_flips(train["images"][indices]) if args.augment else train["images"][indices]
                logits = ddp(model.preprocess(images.to(run.dist.device)))  # (B, C)
                labels = train["labels"][indices].to(run.dist.device)
                loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
                if not run.optimizer_step(loss):
                    break
                if args.save_every and run.step % args.save_every == 0:  # optimizer_step saved a checkpoint
                    save_peft(model, run)
            if run.epoch_complete:
                metrics = evaluate(model, val, run.dist)
                run.end_epoch({"accuracy": metrics["accuracy"]})
                run.state["accuracy"] = metrics["accuracy"]
            run.save()
            save_peft(model, run)
        if run.completed and run.dist.is_main:
            report(model, train, val, classes, metrics, T.read_jsonl(run.out / "metrics.jsonl"), run.out)
        return run.finish()


# ----------------------------------------------------------------------------- saved runs and the report


def use_saved_run(args) -> int:
    """--ask: class probabilities of an image file; --eval-only: re-evaluate the run and rewrite its report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = load_run(args.output_dir)
    classes, size = config["class_names"], config["image_size"]
    if args.ask:
        with torch.no_grad():
            probs = model(model.preprocess(stack_images([load_image(args.ask)], size))).softmax(-1)[0]  # (C,)
        top = probs.topk(min(5, len(classes)))
        top = zip(top.values.tolist(), top.indices.tolist())
        print(T.format_table([{"class": classes[i], "probability": p} for p, i in top]))
        return 0
    train, val, _ = load_data(args, size)
    metrics = evaluate(model, val, T.setup_distributed(device="cpu"))
    out = Path(args.output_dir)
    history = T.read_jsonl(out / "metrics.jsonl", missing_ok=True)
    history.append({"eval_only": True, "accuracy": metrics["accuracy"]})
    report(model, train, val, classes, metrics, history, out)
    return 0


def report(model, train, val, classes, metrics, history, out: Path) -> None:
    """Epoch table, per-class accuracy beside the majority baseline, summary.json, predictions.png."""
    print("\n" + T.format_table([{k: v for k, v in r.items() if k != "time"} for r in history]))
    common, _ = Counter(train["labels"].tolist()).most_common(1)[0]
    majority = (val["labels"] == common).float().mean().item()
    rows = [
        {"class": classes[c], "images": int((val["labels"] == c).sum()), "accuracy": acc}
        for c, acc in metrics["per_class"].items()
    ]
    print("\n" + T.format_table(rows))
    print(f"majority-class baseline ({classes[common]}): {majority:.3f}; accuracy: {metrics['accuracy']:.3f}")
    summary = {"final": history[-1], "accuracy": metrics["accuracy"], "majority_baseline": majority}
    summary |= {"per_class": rows, "class_names": classes}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    n = min(12, len(val["labels"]))
    texts = []
    for pred, label in zip(metrics["predictions"][:n], val["labels"][:n].tolist()):
        colour = (0, 140, 0) if pred == label else (200, 0, 0)
        texts.append([(f"pred: {classes[pred]}", colour), f"true: {classes[label]}"])
    T.image_grid(list(val["images"][:n]), texts, cols=4, cell=160).save(out / "predictions.png")


if __name__ == "__main__":
    sys.exit(main())
