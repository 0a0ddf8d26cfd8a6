"""Visual question answering: image encoder + text encoder + co-attention (or concat) fusion + answer classifier.

The recipe of the course report, runnable offline: by default it generates ShapesWorld, builds a tiny CNN image
encoder and a tiny BERT text encoder from scratch, fuses them with co-attention and trains an answer classifier over
the top answers, in a few minutes on 2 CPU cores. Every experiment of the report is a flag.

Commands:
    python examples/vqa_train.py                                # ShapesWorld, tiny encoders, co-attention
    python examples/vqa_train.py --fusion concat                # the report's light fusion
    python examples/vqa_train.py --heads 8 --depth 2 --pool add --no-encoder-skip
    python examples/vqa_train.py --data vqav2 --data-root ~/data/vqa --train-fraction 0.25 \\
        --image-encoder facebook/dinov2-small --text-encoder FacebookAI/roberta-base \\
        --freeze-encoders --image-size 224 --epochs 5 --batch-size 64 --lr 1e-4
    python examples/vqa_train.py --data vqav2 ... --two-stage --lora-r 8 --lora-targets query,value
    torchrun --nproc_per_node=2 examples/vqa_train.py           # DDP (gloo on CPU, nccl on GPU)
    python examples/vqa_train.py --resume                       # continue runs/vqa from its last checkpoint

VQA v2 layout under --data-root: v2_OpenEnded_mscoco_{train,val}2014_questions.json,
v2_mscoco_{train,val}2014_annotations.json and the COCO image folders train2014/ and val2014/.

Writes --output-dir (runs/vqa): metrics.jsonl, checkpoint/ (safetensors + JSON, atomic), vocab.json,
tokenizer/ (word tokenizer of the tiny text encoder) and predictions.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import signal
import sys
import textwrap
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vlblocks.data import AnswerVocab, ShapesWorld, VQACollator, VQAv2Dataset, build_word_tokenizer
from vlblocks.encoders import ImageEncoder, TextEncoder
from vlblocks.fusion import CoAttentionFusion, ConcatFusion
from vlblocks.heads import MLPHead
from vlblocks.metrics import classification_report, vqa_accuracy, vqa_accuracy_by_type
from vlblocks.models import VQAModel
from vlblocks.peft import apply_lora, count_parameters
from vlblocks.training import (
    MetricLogger,
    cleanup_distributed,
    format_table,
    gather_lists,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=["shapes", "vqav2"], default="shapes")
    g.add_argument("--data-root", type=Path, default=None, help="VQA v2 folder (with --data vqav2)")
    g.add_argument(
        "--train-fraction", type=float, default=1.0, help="image-level random fraction of the train split"
    )
    g.add_argument("--num-scenes", type=int, default=4000, help="ShapesWorld train scenes (val gets a tenth)")
    g.add_argument("--image-size", type=int, default=64)
    g.add_argument("--top-answers", type=int, default=1000, help="answer vocabulary size (top-K answers)")
    g.add_argument("--max-length", type=int, default=24, help="question tokens")
    g.add_argument("--augment", action="store_true", help="colour jitter on train images")
    g = p.add_argument_group("model")
    g.add_argument(
        "--image-encoder", default="tiny-cnn", help="tiny-cnn | tiny-vit | a timm / HF name or path"
    )
    g.add_argument(
        "--text-encoder", default="tiny-bert", help="tiny-bert | tiny-roberta | an HF name or path"
    )
    g.add_argument("--text-depth", type=int, default=1, help="tiny text encoder layers")
    g.add_argument("--fusion", choices=["coattention", "concat"], default="coattention")
    g.add_argument("--dim", type=int, default=64, help="fusion width (and tiny encoder width)")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--depth", type=int, default=1, help="co-attention layers")
    g.add_argument("--pool", choices=["concat", "add", "mean"], default="concat")
    g.add_argument(
        "--summary", choices=["cls", "max", "mean"], default="max", help="what stands for each stream"
    )
    g.add_argument("--encoder-skip", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument(
        "--self-attn",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="LXMERT layer (cross, self, FFN) instead of ViLBERT's (co-attention, FFN)",
    )
    g.add_argument("--mlp-ratio", type=float, default=2.0, help="co-attention FFN width / dim")
    g.add_argument("--patch-size", type=int, default=8, help="tiny image encoders: pixels per token side")
    g.add_argument("--image-dim", type=int, default=0, help="tiny image encoder width (0: --dim)")
    g.add_argument("--hidden", type=int, default=256, help="classifier hidden width")
    g.add_argument("--dropout", type=float, default=0.0)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--freeze-encoders", action="store_true")
    g.add_argument("--lora-r", type=int, default=0, help="LoRA rank on the encoders (0: off)")
    g.add_argument("--lora-alpha", type=float, default=None, help="default 2 * r")
    g.add_argument("--lora-targets", default="query,value", help="comma-separated module names / regexes")
    g.add_argument(
        "--two-stage", action="store_true", help="train fusion + head on frozen encoders first, then LoRA"
    )
    g.add_argument("--stage1-epochs", type=int, default=1)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps in total (0: epochs decide)"
    )
    g.add_argument("--batch-size", type=int, default=64, help="per process")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--lr-decay", choices=["cosine", "linear", "none"], default="cosine")
    g.add_argument("--warmup", type=float, default=0.05, help="warm-up fraction of the steps")
    g.add_argument("--loss", choices=["ce", "soft-bce"], default="ce")
    g.add_argument("--class-weights", action="store_true", help="inverse-frequency answer weights (ce)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", type=Path, default=Path("runs/vqa"))
    g.add_argument("--resume", action="store_true", help="continue from output-dir/checkpoint")
    g.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (0: each epoch)")
    g.add_argument(
        "--stop-after", type=int, default=0, help="checkpoint and stop after N steps of this invocation"
    )
    g.add_argument("--eval-batches", type=int, default=0, help="limit validation batches (0: all)")
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args(argv)
    if args.data == "vqav2" and args.data_root is None:
        p.error("--data vqav2 needs --data-root")
    if not 0 < args.train_fraction <= 1:
        p.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.two_stage and not (args.lora_r or not args.freeze_encoders):
        p.error("--two-stage trains LoRA (--lora-r) or the unfrozen encoders in stage 2")
    return args


# ----------------------------------------------------------------------------- data


def build_datasets(args: argparse.Namespace) -> tuple:
    """Train and validation question datasets (items: image, question, answers, question_type, ...)."""
    if args.data == "shapes":
        train = ShapesWorld("train", num_scenes=args.num_scenes, image_size=args.image_size, seed=args.seed)
        val = ShapesWorld(
            "val", num_scenes=max(args.num_scenes // 10, 50), image_size=args.image_size, seed=args.seed
        )
        return train.vqa(), val.vqa()
    root = args.data_root.expanduser()
    splits = []
    for split, fraction in (("train2014", args.train_fraction), ("val2014", 1.0)):
        splits.append(
            VQAv2Dataset(
                root / f"v2_OpenEnded_mscoco_{split}_questions.json",
                root / f"v2_mscoco_{split}_annotations.json",
                root / split,
                image_name=f"COCO_{split}_{{image_id:012d}}.jpg",
                train_fraction=fraction,
                seed=args.seed,
            )
        )
    return tuple(splits)


def image_groups(records: list[dict]) -> list[list[int]]:
    """Question indices grouped by image, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for k, r in enumerate(records):
        groups.setdefault(r["image_id"], []).append(k)
    return list(groups.values())


# ----------------------------------------------------------------------------- model


def build_model(args: argparse.Namespace, tokenizer, num_answers: int) -> VQAModel:
    if args.image_encoder.startswith("tiny-"):
        image_encoder = ImageEncoder.tiny(
            args.image_encoder[5:],
            image_size=args.image_size,
            dim=args.image_dim or args.dim,
            patch_size=args.patch_size,
        )
    else:
        image_encoder = ImageEncoder.from_pretrained(args.image_encoder, image_size=args.image_size)
    if args.text_encoder.startswith("tiny-"):
        text_encoder = TextEncoder.tiny(
            args.text_encoder[5:],
            tokenizer=tokenizer,
            dim=args.dim,
            depth=args.text_depth,
            max_positions=max(args.max_length, 32),
        )
    else:
        text_encoder = TextEncoder.from_pretrained(args.text_encoder)
    if args.fusion == "coattention":
        fusion = CoAttentionFusion(
            image_encoder.dim,
            text_encoder.dim,
            dim=args.dim,
            heads=args.heads,
            depth=args.depth,
            mlp_ratio=args.mlp_ratio,
            self_attn=args.self_attn,
            summary=args.summary,
            pool=args.pool,
            encoder_skip=args.encoder_skip,
            dropout=args.dropout,
        )
    else:
        fusion = ConcatFusion(image_encoder.dim, text_encoder.dim, dim=args.hidden, dropout=args.dropout)
    head = MLPHead(fusion.out_dim, num_answers, hidden_dim=args.hidden, dropout=args.dropout)
    return VQAModel(image_encoder, text_encoder, fusion, head)


def configure_stage(model: VQAModel, args: argparse.Namespace, stage: int) -> None:
    """What trains in this stage: the encoders fully, not at all (frozen, eval mode), or through LoRA.

    Stage 1 of --two-stage freezes both encoders; stage 2 (or a single-stage run with --lora-r) adds LoRA to every
    encoder that has modules matching --lora-targets and trains only those LoRA weights of the encoders.
    """
    encoders = (model.image_encoder, model.text_encoder)
    lora_now = args.lora_r > 0 and (stage == 2 or not args.two_stage)
    if lora_now and not any("lora_A" in n for n, _ in model.named_parameters()):
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        wrapped = []
        for encoder in encoders:
            try:
                wrapped += apply_lora(
                    encoder, targets, r=args.lora_r, alpha=args.lora_alpha or 2 * args.lora_r
                )
            except ValueError:  # no module of this encoder matches (e.g. the tiny CNN has no "query")
                continue
        if not wrapped:
            raise SystemExit(f"--lora-targets {args.lora_targets!r} matches no module of either encoder")
    for encoder in encoders:
        if lora_now:
            encoder.unfreeze()
            for name, p in encoder.named_parameters():
                p.requires_grad_("lora_" in name)
        elif args.freeze_encoders or (args.two_stage and stage == 1):
            encoder.freeze()
        else:
            encoder.unfreeze()


# ----------------------------------------------------------------------------- training


def lr_factor(step: int, total: int, args: argparse.Namespace) -> float:
    warm = max(1, int(args.warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if args.lr_decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if args.lr_decay == "linear":
        return 1.0 - progress
    return 1.0


def chunk_groups(groups: list[list[int]], per_batch: int) -> list[list[int]]:
    """Consecutive runs of `per_batch` groups, each flattened into one batch of question indices."""
    return [list(itertools.chain(*groups[s : s + per_batch])) for s in range(0, len(groups), per_batch)]


def epoch_batches(
    groups: list[list[int]], per_batch: int, seed: int, epoch: int, rank: int, world: int
) -> list[list[int]]:
    """This rank's batches of one epoch: shuffled images, `per_batch` images (all their questions) a batch.

    A function of (seed, epoch) only, so a resumed run sees the same batches. Grouping a batch by image lets the
    image encoder run once per image (VQA has several questions per image).
    """
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(groups), generator=g).tolist()
    batches = chunk_groups([groups[i] for i in order], per_batch)
    usable = len(batches) - len(batches) % world  # equal shards keep DDP ranks in step
    return batches[rank:usable:world]


def forward(model, batch: dict) -> torch.Tensor:
    """Answer logits (B, K) of a collated batch (each distinct image encoded once)."""
    return model(
        batch["pixel_values"], batch["input_ids"], batch["attention_mask"], image_index=batch["image_index"]
    )


def compute_loss(logits, batch, args, class_weights) -> torch.Tensor:
    if args.loss == "soft-bce":  # VQA soft scores as targets (Teney et al. 2018), summed over answers
        return F.binary_cross_entropy_with_logits(logits, batch["scores"], reduction="mean") * logits.shape[1]
    return F.cross_entropy(logits, batch["labels"], weight=class_weights, ignore_index=-100)


@torch.no_grad()
def evaluate(model, dataset, collate, vocab, args, dist) -> dict:
    """VQA accuracy (overall, per type), label accuracy and P/R/F1 on this rank's shard, gathered across ranks."""
    model.eval()
    groups = image_groups(dataset.records())[dist.rank :: dist.world_size]
    per_batch = max(
        1, 4 * args.batch_size * len(groups) // max(1, sum(map(len, groups)))
    )  # no grad: 4x batch
    batches = chunk_groups(groups, per_batch)
    if args.eval_batches:
        batches = batches[: args.eval_batches]
    preds, answers, types, labels = [], [], [], []
    for indices in tqdm(batches, desc="eval", leave=False, disable=not dist.is_main):
        batch = collate([dataset[i] for i in indices])
        if batch is None:
            continue
        preds += [vocab.decode(i) for i in forward(model, batch).argmax(-1).tolist()]
        answers += batch["answers"]
        types += batch["question_type"]
        labels += batch["labels"].tolist()
    preds, answers, types, labels = (gather_lists(x) for x in (preds, answers, types, labels))
    model.train()
    known = [(y, vocab.encode(p)) for y, p in zip(labels, preds) if y >= 0]
    report = classification_report([y for y, _ in known], [p for _, p in known], num_classes=len(vocab))
    return {
        "vqa_accuracy": vqa_accuracy(preds, answers),
        "accuracy": sum(y == p for y, p in known) / max(1, len(labels)),
        "precision": report.precision_macro,
        "recall": report.recall_macro,
        "f1": report.f1_macro,
        "by_type": vqa_accuracy_by_type(preds, answers, types),
        "predictions": preds,
        "answers": answers,
        "types": types,
    }


class StopRequest:
    """Turns SIGINT / SIGTERM into a clean stop at the next step boundary, so the checkpoint is written."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstop requested: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = setup_distributed()
    seed_everything(args.seed)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    log = MetricLogger(out / "metrics.jsonl", rank=dist.rank)
    say = print if dist.is_main else (lambda *a, **k: None)

    t0 = time.perf_counter()
    train_set, val_set = build_datasets(args)
    train_records = train_set.records()
    vocab = AnswerVocab.build([r["answers"] for r in train_records], top_k=args.top_answers)
    tokenizer = None
    if args.text_encoder.startswith("tiny-"):
        tokenizer = build_word_tokenizer([r["question"] for r in train_records])
        if dist.is_main:
            tokenizer.save_pretrained(out / "tokenizer")
    if dist.is_main:
        vocab.save(out / "vocab.json")
    say(
        f"data: {len(train_set)} train / {len(val_set)} val questions, {len(vocab)} answers ({time.perf_counter() - t0:.1f}s)"
    )

    seed_everything(args.seed)  # the model's init does not depend on how much randomness the data used
    model = build_model(args, tokenizer, len(vocab))
    tokenizer = model.text_encoder.tokenizer
    cfg = model.image_encoder.image_config
    common = dict(
        image_size=cfg.size, mean=cfg.mean, std=cfg.std, max_length=args.max_length, group_images=True
    )
    collate = VQACollator(tokenizer, vocab, **common)
    train_collate = VQACollator(tokenizer, vocab, augment=args.augment, **common)

    class_weights = None
    if args.class_weights and args.loss == "ce":
        counts = Counter(vocab.encode(r["answer"]) for r in train_records)
        freq = torch.tensor([counts.get(i, 0) for i in range(len(vocab))], dtype=torch.float)
        class_weights = (freq.sum() / (len(vocab) * freq.clamp(min=1))).clamp(max=10.0)

    groups = image_groups(train_records)
    per_batch = max(1, round(args.batch_size * len(groups) / len(train_records)))  # images per batch
    steps_per_epoch = math.ceil(len(groups) / per_batch) // dist.world_size
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    stage1_steps = args.stage1_epochs * steps_per_epoch if args.two_stage else 0

    state = {"step": 0, "best_vqa_accuracy": 0.0}
    resumed = args.resume and (ckpt_dir / "trainer_state.json").exists()
    start_stage = 2 if resumed and state_step(ckpt_dir) >= stage1_steps and args.two_stage else 1
    configure_stage(model, args, start_stage)
    optimizer, scheduler = make_optimizer(model, args, total_steps)
    if resumed:
        state = load_checkpoint(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        say(f"resumed from {ckpt_dir} at step {state['step']}")
    elif args.resume:
        say(f"--resume: no checkpoint in {ckpt_dir}, starting fresh")
    trainable, total, percent = count_parameters(model)
    say(f"model: {total:,} parameters, {trainable:,} trainable ({percent:.1f}%)")
    ddp = DistributedDataParallel(model) if dist.world_size > 1 else model

    saved_step = -1

    def checkpoint() -> None:
        """Save (rank 0) unless this step is saved already: the end of an epoch is often the end of the run."""
        nonlocal saved_step
        if dist.is_main and state["step"] != saved_step:
            save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, state=state)
        saved_step = state["step"]

    stop = StopRequest()
    step, run_steps, history = state["step"], 0, []
    model.train()
    for epoch in range(step // steps_per_epoch, args.epochs):
        if step >= total_steps or stop.requested:
            break
        batches = epoch_batches(groups, per_batch, args.seed, epoch, dist.rank, dist.world_size)
        first = step - epoch * steps_per_epoch
        t_epoch, losses = time.perf_counter(), []
        bar = tqdm(
            range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not dist.is_main
        )
        for b in bar:
            if step >= total_steps or stop.requested:
                break
            if args.two_stage and step == stage1_steps and stage1_steps > 0:
                configure_stage(model, args, 2)
                say("stage 2: " + ("LoRA on the encoders" if args.lora_r else "encoders unfrozen"))
                optimizer, scheduler, ddp = restage(model, args, total_steps, step, dist)
            torch.manual_seed(args.seed * 1_000_003 + step * dist.world_size + dist.rank)  # dropout / augment
            batch = train_collate([train_set[i] for i in batches[b]])
            if batch is None:  # every image of the batch unreadable (counted and warned by the collator)
                continue
            logits = forward(ddp, batch)
            loss = compute_loss(logits, batch, args, class_weights)
            if not torch.isfinite(loss):
                say(
                    f"non-finite loss ({loss.item()}) at step {step}: stopping; the last good checkpoint in {ckpt_dir} is kept"
                )
                cleanup_distributed()
                return 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step, run_steps = step + 1, run_steps + 1
            state["step"] = step
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            if args.stop_after and run_steps >= args.stop_after:
                stop.requested = True
            if args.save_every and step % args.save_every == 0:
                checkpoint()
        epoch_done = step % steps_per_epoch == 0 or step >= total_steps
        if not losses or not epoch_done and not stop.requested:
            continue
        metrics = evaluate(model, val_set, collate, vocab, args, dist)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "loss": sum(losses) / len(losses),
            **{k: metrics[k] for k in ("accuracy", "vqa_accuracy", "precision", "recall", "f1")},
            "time_s": time.perf_counter() - t_epoch,
        }
        log.log(**row, by_type=metrics["by_type"])
        history.append(row)
        say(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        state["best_vqa_accuracy"] = max(state["best_vqa_accuracy"], metrics["vqa_accuracy"])
        checkpoint()

    if stop.requested and step < total_steps:
        checkpoint()
        say(f"stopped at step {step}/{total_steps}; checkpoint in {ckpt_dir}; continue with --resume")
        cleanup_distributed()
        return 0
    checkpoint()
    if dist.is_main and history:
        report(model, val_set, collate, vocab, train_records, metrics, history, args, out)
    say(f"done in {time.perf_counter() - t0:.0f}s; outputs in {out}")
    cleanup_distributed()
    return 0


def state_step(ckpt_dir: Path) -> int:
    return int(json.loads((ckpt_dir / "trainer_state.json").read_text()).get("state", {}).get("step", 0))


def make_optimizer(model, args, total_steps: int, offset: int = 0):
    """AdamW (fused kernel: one pass over all parameters) on the trainable parameters, and the schedule from `offset`."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s + offset, total_steps, args)
    )
    return optimizer, scheduler


def restage(model, args, total_steps: int, step: int, dist):
    """A new optimizer over the stage-2 trainable parameters, continuing the learning-rate schedule."""
    optimizer, scheduler = make_optimizer(model, args, total_steps, offset=step)
    ddp = DistributedDataParallel(model) if dist.world_size > 1 else model
    return optimizer, scheduler, ddp


# ----------------------------------------------------------------------------- report


def report(model, val_set, collate, vocab, train_records, metrics, history, args, out: Path) -> None:
    """Final table, per-type accuracy beside the majority baseline, prediction distribution, and a PNG grid."""
    print("\n" + format_table(history))
    majority = defaultdict(Counter)
    for r in train_records:
        majority[r["question_type"]][r["answer"]] += 1
    rows = []
    for qtype, acc in sorted(metrics["by_type"].items()):
        guess = majority[qtype].most_common(1)[0][0] if majority[qtype] else ""
        idx = [i for i, t in enumerate(metrics["types"]) if t == qtype]
        base = vqa_accuracy([guess] * len(idx), [metrics["answers"][i] for i in idx]) if idx else 0.0
        rows.append(
            {
                "question_type": qtype,
                "questions": len(idx),
                "vqa_accuracy": acc,
                "majority_answer": guess,
                "majority_baseline": base,
            }
        )
    print("\n" + format_table(rows))
    counts = Counter(metrics["predictions"])
    n = len(metrics["predictions"])
    print("\nmost predicted answers (a model that 'only says yes' shows here):")
    print(format_table([{"answer": a, "share": c / n} for a, c in counts.most_common(10)]))
    json.dump({"by_type": rows, "final": history[-1]}, open(out / "summary.json", "w"), indent=2)
    save_prediction_grid(model, val_set, collate, vocab, out / "predictions.png")


@torch.no_grad()
def save_prediction_grid(model, dataset, collate, vocab, path: Path, n: int = 12, cell: int = 192) -> None:
    """A PNG grid of validation images: question, prediction with its VQA score (green >= 0.9, orange partial,
    red 0) and the most common human answer."""
    from PIL import Image, ImageDraw

    items = [dataset[i] for i in range(min(n, len(dataset)))]
    batch = collate(items)
    model.eval()
    preds = [vocab.decode(i) for i in forward(model, batch).argmax(-1).tolist()]
    cols, text_h = 4, 68
    rows = math.ceil(len(items) / cols)
    grid = Image.new("RGB", (cols * cell, rows * (cell + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (item, pred) in enumerate(zip(items, preds)):
        image = item["image"]
        if isinstance(image, torch.Tensor):
            image = Image.fromarray(image.permute(1, 2, 0).numpy())
        x, y = (i % cols) * cell, (i // cols) * (cell + text_h)
        grid.paste(image.convert("RGB").resize((cell - 8, cell - 8), Image.NEAREST), (x + 4, y + 4))
        score = vqa_accuracy([pred], [item["answers"]])
        colour = (0, 140, 0) if score >= 0.9 else (220, 120, 0) if score > 0 else (200, 0, 0)
        for line, text in enumerate(textwrap.wrap(item["question"], 30)[:2]):
            draw.text((x + 4, y + cell + 14 * line), text, fill="black")
        draw.text((x + 4, y + cell + 30), f"pred: {pred} ({score:.1f})", fill=colour)
        draw.text((x + 4, y + cell + 46), f"answer: {item['answer']}", fill="black")
    grid.save(path)


if __name__ == "__main__":
    sys.exit(main())
