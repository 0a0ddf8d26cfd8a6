"""Visual question answering: image encoder + text encoder + co-attention (or concat) fusion + answer classifier.

The recipe of the course report, runnable offline: by default it generates ShapesWorld, builds a tiny CNN image
encoder and a tiny BERT text encoder from scratch, fuses them with co-attention and trains an answer classifier over
the top answers, in about two minutes on 2 CPU cores. Every experiment of the report is a flag.

Commands:
    python examples/vqa_train.py                                # ShapesWorld, tiny encoders, co-attention
    python examples/vqa_train.py --ask scene.png "what color is the circle?"   # top-5 answers of the trained run
    python examples/vqa_train.py --eval-only                    # re-evaluate runs/vqa, rewrite its report
    python examples/vqa_train.py --resume                       # continue runs/vqa from its last checkpoint
    python examples/vqa_train.py --fusion concat --output-dir runs/vqa-concat   # the report's light fusion
    python examples/vqa_train.py --heads 8 --depth 2 --pool add --no-encoder-skip --output-dir runs/vqa-deep
    python examples/vqa_train.py --data vqav2 --data-root ~/data/vqa --train-fraction 0.25 \\
        --image-encoder facebook/dinov2-small --text-encoder FacebookAI/roberta-base \\
        --freeze-encoders --image-size 224 --epochs 5 --batch-size 64 --lr 1e-4
    python examples/vqa_train.py --data vqav2 ... --two-stage --lora-r 8 --lora-targets query,value
    torchrun --nproc_per_node=2 examples/vqa_train.py --output-dir runs/vqa-ddp   # DDP (gloo on CPU, nccl on GPU)

VQA v2 layout under --data-root: v2_OpenEnded_mscoco_{train,val}2014_questions.json,
v2_mscoco_{train,val}2014_annotations.json and the image folders train2014/ and val2014/ (ShapesWorld.export()
writes the same layout). Writes --output-dir (runs/vqa): run_config.json, metrics.jsonl, checkpoint/ (safetensors +
JSON, atomic), vocab.json, tokenizer/, summary.json and predictions.png. A folder that holds a run is never
overwritten: pass --resume or --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from vlblocks import training as T
from vlblocks.constants import IGNORE_INDEX
from vlblocks.data import AnswerVocab, ShapesWorld, VQACollator, VQAv2Dataset, build_word_tokenizer
from vlblocks.metrics import classification_report, vqa_accuracy, vqa_accuracy_by_type
from vlblocks.models import VQAPreset, apply_vqa_lora, ask_vqa, build_vqa_model, load_run
from vlblocks.utils import count_parameters

SCORES = ("accuracy", "vqa_accuracy", "precision", "recall", "f1")
# flags that say how to run, not what to build: a resumed / loaded run keeps these from the command line
CONTROL = (*T.RUN_CONTROL, "ask")


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=["shapes", "vqav2"], default="shapes")
    g.add_argument("--data-root", type=Path, default=None, help="VQA v2 folder (with --data vqav2)")
    g.add_argument("--train-fraction", type=float, default=1.0, help="fraction of the train images")
    g.add_argument("--num-scenes", type=T.positive_int, default=4000, help="ShapesWorld training scenes")
    g.add_argument("--val-scenes", type=T.positive_int, default=None, help="default: num_scenes / 10, >= 50")
    g.add_argument("--questions-per-scene", type=T.positive_int, default=5, help="ShapesWorld questions per scene")
    g.add_argument("--image-size", type=T.positive_int, default=64)
    g.add_argument("--top-answers", type=T.positive_int, default=1000, help="answer vocabulary size")
    g.add_argument("--max-length", type=T.positive_int, default=24, help="question tokens")
    g.add_argument("--augment", action="store_true", help="colour jitter on train images")
    g = p.add_argument_group("model")
    g.add_argument("--image-encoder", default="tiny-cnn", help="tiny-cnn | tiny-vit | timm / HF name or path")
    g.add_argument("--text-encoder", default="tiny-bert", help="tiny-bert | tiny-roberta | HF name or path")
    g.add_argument("--text-depth", type=T.positive_int, default=1, help="tiny text encoder layers")
    g.add_argument("--fusion", choices=["coattention", "concat"], default="coattention")
    g.add_argument("--dim", type=T.positive_int, default=64, help="fusion width (and tiny encoder width)")
    g.add_argument("--heads", type=T.positive_int, default=4)
    g.add_argument("--depth", type=T.positive_int, default=1, help="co-attention layers")
    g.add_argument("--pool", choices=["concat", "add", "mean"], default="concat")
    g.add_argument("--summary", choices=["cls", "max", "mean"], default="max", help="a stream's summary")
    g.add_argument("--encoder-skip", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--self-attn", action=argparse.BooleanOptionalAction, default=False, help="LXMERT layer")
    g.add_argument("--mlp-ratio", type=T.positive_float, default=2.0, help="co-attention FFN width / dim")
    g.add_argument("--patch-size", type=T.positive_int, default=8, help="tiny image encoders: patch pixels")
    g.add_argument("--image-dim", type=T.nonneg_int, default=0, help="tiny image encoder width (0: --dim)")
    g.add_argument("--hidden-dim", type=T.positive_int, default=256, help="classifier hidden width")
    g.add_argument("--dropout", type=T.fraction, default=0.0)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--freeze-encoders", action="store_true")
    g.add_argument("--lora-r", type=T.nonneg_int, default=0, help="LoRA rank on the encoders (0: off)")
    g.add_argument("--lora-alpha", type=T.positive_float, default=None, help="default 2 * r")
    g.add_argument("--lora-targets", default="query,value", help="comma-separated module names / regexes")
    g.add_argument("--two-stage", action="store_true", help="fusion + head on frozen encoders, then LoRA")
    g.add_argument("--stage1-epochs", type=T.positive_int, default=1)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr-decay", choices=["cosine", "linear", "none"], default="cosine")
    g.add_argument("--loss", choices=["ce", "soft-bce"], default="ce")
    g.add_argument("--class-weights", action="store_true", help="inverse-frequency answer weights (ce)")
    g.add_argument("--eval-batches", type=T.nonneg_int, default=0, help="limit validation batches (0: all)")
    T.add_run_args(p, task="vqa", epochs=8, batch_size=96, lr=1.5e-3)
    p.add_argument("--ask", nargs=2, metavar=("IMAGE", "QUESTION"), help="top-5 answers of the trained run")
    args = p.parse_args(argv)
    if args.data == "vqav2" and args.data_root is None:
        p.error("--data vqav2 needs --data-root")
    if not 0 < args.train_fraction <= 1:
        p.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.two_stage and not (args.lora_r or not args.freeze_encoders):
        p.error("--two-stage trains LoRA (--lora-r) or the unfrozen encoders in stage 2")
    if args.resume or args.eval_only or args.ask:  # a run folder describes itself: its own flags win
        args = T.restore_run_args(args, keep=CONTROL, error=p.error)
    return args


# ----------------------------------------------------------------------------- data and model


def build_data(args, out: Path, dist):
    """Train / val question datasets, the answer vocabulary and (tiny text encoders) the word tokenizer."""
    if args.data == "shapes":
        train, val = (
            ShapesWorld(
                split,
                num_scenes=n,
                image_size=args.image_size,
                questions_per_scene=args.questions_per_scene,
                seed=args.seed,
            ).vqa()
            for split, n in (("train", args.num_scenes), ("val", args.val_scenes or max(args.num_scenes // 10, 50)))
        )
    else:
        try:
            train = VQAv2Dataset.from_root(
                args.data_root, "train2014", train_fraction=args.train_fraction, seed=args.seed
            )
            val = VQAv2Dataset.from_root(args.data_root, "val2014")
        except (FileNotFoundError, ValueError) as err:
            T.usage_error(f"--data-root {args.data_root}: {err}")
    records = train.records()
    vocab = AnswerVocab.build([r["answers"] for r in records], top_k=args.top_answers)
    tokenizer = None
    if args.text_encoder.startswith("tiny-"):
        tokenizer = build_word_tokenizer([r["question"] for r in records])
    if dist.is_main:
        vocab.save(out / "vocab.json")
        if tokenizer is not None:
            tokenizer.save_pretrained(out / "tokenizer")
    return train, val, records, vocab, tokenizer


def configure_stage(model, args, stage: int, say) -> None:
    """What trains: the encoders fully, not at all (frozen, eval mode), or through LoRA (stage 2 of --two-stage,
    or any run with --lora-r)."""
    lora_now = args.lora_r > 0 and (stage == 2 or not args.two_stage)
    if lora_now and not any("lora_A" in n for n, _ in model.named_parameters()):
        try:
            counts = apply_vqa_lora(model, VQAPreset.from_dict(vars(args)))
        except ValueError as err:
            T.usage_error(f"--lora-targets: {err}")
        say("LoRA: " + ", ".join(f"{k} {v} modules" for k, v in counts.items()))
        for name, n in counts.items():
            if n == 0:
                say(
                    f"warning: no module of the {name} matches --lora-targets {args.lora_targets!r}; it stays frozen"
                )
    for encoder in (model.image_encoder, model.text_encoder):
        if lora_now:
            encoder.unfreeze()
            for name, p in encoder.named_parameters():
                p.requires_grad_("lora_" in name)
        elif args.freeze_encoders or (args.two_stage and stage == 1):
            encoder.freeze()
        else:
            encoder.unfreeze()


def image_groups(records: list[dict]) -> list[list[int]]:
    """Question indices grouped by image (the image is encoded once per batch)."""
    groups: dict[int, list[int]] = {}
    for k, r in enumerate(records):
        groups.setdefault(r["image_id"], []).append(k)
    return list(groups.values())


def forward(model, batch: dict) -> torch.Tensor:
    """Answer logits (B, K) of a collated batch (its tensors moved to the model's device)."""
    batch = T.to_device(batch, next(model.parameters()).device)
    return model(
        batch["pixel_values"], batch["input_ids"], batch["attention_mask"], image_index=batch["image_index"]
    )


def compute_loss(logits, batch, args, class_weights) -> torch.Tensor:
    if args.loss == "soft-bce":  # VQA soft scores as targets (Teney et al. 2018), summed over answers
        return F.binary_cross_entropy_with_logits(logits, batch["scores"]) * logits.shape[1]
    return F.cross_entropy(logits, batch["labels"], weight=class_weights, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(model, dataset, collate, vocab, args, dist) -> dict:
    """VQA accuracy (overall, per type), label accuracy and macro P/R/F1, gathered across ranks."""
    model.eval()
    groups = image_groups(dataset.records())[dist.rank :: dist.world_size]
    per_batch = max(1, 4 * args.batch_size * len(groups) // max(1, sum(map(len, groups))))
    batches = T.chunk_groups(groups, per_batch)[: args.eval_batches or None]
    preds, answers, types, labels = [], [], [], []
    for indices in T.progress(batches, desc="eval", leave=False, enabled=dist.is_main):
        batch = collate([dataset[i] for i in indices])
        if batch is not None:
            preds += [vocab.decode(i) for i in forward(model, batch).argmax(-1).tolist()]
            answers, types, labels = (
                answers + batch["answers"],
                types + batch["question_type"],
                labels + batch["labels"].tolist(),
            )
    preds, answers, types, labels = (T.gather_lists(x) for x in (preds, answers, types, labels))
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


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ask or args.eval_only:
        return use_saved_run(args)
    with T.start_run(args, task="vqa") as run:
        train_set, val_set, records, vocab, tokenizer = build_data(args, run.out, run.dist)
        run.say(f"data: {len(train_set)} train / {len(val_set)} val questions, {len(vocab)} answers")
        T.seed_everything(args.seed)  # the model's init does not depend on how much randomness the data used
        preset = VQAPreset.from_dict(vars(args))
        model = build_vqa_model(preset, num_answers=len(vocab), tokenizer=tokenizer).to(run.dist.device)
        run.save_config(model=preset.to_dict())
        collate, train_collate = (make_collator(model, vocab, args, augment=a) for a in (False, args.augment))
        weights = answer_weights(records, vocab) if args.class_weights and args.loss == "ce" else None
        groups = image_groups(records)
        per_batch = max(1, round(args.batch_size * len(groups) / len(records)))  # images per batch
        total = run.plan(groups, per_batch=per_batch)
        stage1 = args.stage1_epochs * run.steps_per_epoch if args.two_stage else 0
        configure_stage(model, args, 2 if args.two_stage and run.step >= stage1 else 1, run.say)
        run.track(model=model, **make_optimizer(model, args, total, offset=0))
        run.restore()
        trainable, n_params, percent = count_parameters(model)
        run.say(f"model: {n_params:,} parameters, {trainable:,} trainable ({percent:.1f}%)")
        ddp = T.wrap_ddp(model, run.dist)
        for _, batches in run.epochs(groups, per_batch=per_batch):
            for indices in run.progress(batches):
                if args.two_stage and run.step == stage1 > 0:
                    run.say("stage 2: " + ("LoRA on the encoders" if args.lora_r else "encoders unfrozen"))
                    configure_stage(model, args, 2, run.say)
                    run.track(**make_optimizer(model, args, total, offset=run.step))
                    ddp = T.wrap_ddp(model, run.dist)
                batch = train_collate([train_set[i] for i in indices])
                batch = T.to_device(batch, run.dist.device) if batch else None  # None: an empty batch
                loss = compute_loss(forward(ddp, batch), batch, args, weights) if batch else None
                if not run.optimizer_step(loss):
                    break
            if run.epoch_complete:
                metrics = evaluate(model, val_set, collate, vocab, args, run.dist)
                run.end_epoch({k: metrics[k] for k in SCORES}, by_type=metrics["by_type"])
            run.save()
        if run.completed and run.dist.is_main:
            report(model, val_set, collate, vocab, records, metrics, run.history, run.out)
        return run.finish()


def make_optimizer(model, args, total: int, offset: int) -> dict:
    """AdamW (no decay on 1-D parameters) on what trains now, and the warm-up + decay schedule from `offset`."""
    optimizer = T.build_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    warmup = T.warmup_steps_for(args.warmup, total)
    scheduler = T.build_scheduler(
        optimizer, total_steps=total, warmup_steps=warmup, decay=args.lr_decay, offset=offset
    )
    return {"optimizer": optimizer, "scheduler": scheduler}


def make_collator(model, vocab, args, augment: bool = False) -> VQACollator:
    """Tokenise, resize / normalise as the model's image encoder expects, encode each image once per batch."""
    image_config, tokenizer = model.image_encoder.image_config, model.text_encoder.tokenizer
    return VQACollator(
        tokenizer, vocab, image_config=image_config, max_length=args.max_length, group_images=True, augment=augment
    )


def answer_weights(records, vocab) -> torch.Tensor:
    """Inverse-frequency answer weights, capped at 10."""
    counts = Counter(vocab.encode(r["answer"]) for r in records)
    freq = torch.tensor([counts.get(i, 0) for i in range(len(vocab))], dtype=torch.float)
    return (freq.sum() / (len(vocab) * freq.clamp(min=1))).clamp(max=10.0)


# ----------------------------------------------------------------------------- saved runs and the report


def use_saved_run(args) -> int:
    """--ask: top-5 answers for an image file; --eval-only: re-evaluate the run and rewrite its report."""
    run = load_run(args.output_dir)
    if args.ask:
        image, question = args.ask
        answers = ask_vqa(run, image, question)
        print(f"Q: {question}\n" + T.format_table([{"answer": a, "probability": p} for a, p in answers]))
        return 0
    dist = T.setup_distributed(device="cpu")
    _, val_set, records, vocab, _ = build_data(args, Path(args.output_dir), dist)
    collate = make_collator(run.model, run.vocab, args)
    metrics = evaluate(run.model, val_set, collate, run.vocab, args, dist)
    row = {"eval_only": True, **{k: metrics[k] for k in SCORES}}
    history = [*T.read_jsonl(Path(args.output_dir) / "metrics.jsonl", missing_ok=True), row]
    report(run.model, val_set, collate, run.vocab, records, metrics, history, Path(args.output_dir))
    return 0


def report(model, val_set, collate, vocab, records, metrics, history, out: Path) -> None:
    """Final table, per-type accuracy beside the majority baseline, prediction distribution, summary, PNG grid."""
    history = [{k: v for k, v in r.items() if k not in ("time", "by_type")} for r in history]
    majority = defaultdict(Counter)
    for r in records:
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
    T.write_summary(out, history, by_type=rows)  # prints the epoch table; summary.json
    print("\n" + T.format_table(rows))
    counts, n = Counter(metrics["predictions"]), len(metrics["predictions"])
    print("\nmost predicted answers (a model that 'only says yes' shows here):")
    print(T.format_table([{"answer": a, "share": c / n} for a, c in counts.most_common(10)]))
    prediction_grid(model, val_set, collate, vocab).save(out / "predictions.png")


@torch.no_grad()
def prediction_grid(model, dataset, collate, vocab, n: int = 12):
    """`n` distinct validation scenes, one question each, cycling through the question types."""
    records = dataset.records()
    kinds = sorted({r["question_type"] for r in records})
    picks = []
    for group in image_groups(records)[:n]:
        wanted = kinds[len(picks) % len(kinds)]
        picks.append(next((k for k in group if records[k]["question_type"] == wanted), group[0]))
    items = [dataset[k] for k in picks]
    model.eval()
    preds = [vocab.decode(i) for i in forward(model, collate(items)).argmax(-1).tolist()]
    texts = []
    for item, pred in zip(items, preds):
        score = vqa_accuracy([pred], [item["answers"]])
        colour = (0, 140, 0) if score >= 0.9 else (220, 120, 0) if score > 0 else (200, 0, 0)
        texts.append([item["question"], (f"pred: {pred} ({score:.1f})", colour), f"answer: {item['answer']}"])
    return T.image_grid([item["image"] for item in items], texts, cols=4, cell=192, lines=4)


if __name__ == "__main__":
    sys.exit(main())
