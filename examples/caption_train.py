"""Image captioning: image encoder + projector + GPT-2 decoder (cross-attention or visual prefix), fine-tuned in full
or with LoRA, bottleneck adapters or a soft prompt; BLEU-4 and CIDEr-D with greedy decoding every epoch.

The recipe of the course reports, runnable offline. A PEFT comparison only means something on a pretrained language
model, so by default the tiny GPT-2 is first pretrained as a text-only language model on the ShapesWorld training
captions (cached in the run folder under lm/ and reused), then a tiny ViT (with a convolutional stem), a projector
and the decoder's new cross-attention learn to caption while LoRA (r=16 on c_attn / c_proj / c_fc) adapts the
frozen language model, as the reports adapt a pretrained GPT-2. The model learns each scene's full caption (every object with size,
colour, shape and position); validation scores greedy captions against all five references of 500 scenes.

Commands:
    python examples/caption_train.py                              # ShapesWorld, tiny ViT + tiny GPT-2, LoRA r=16
    python examples/caption_train.py --stem patch --num-scenes 4000 --epochs 10 --batch-size 64 --lm-steps 300 \\
        --output-dir runs/caption-v1                              # the earlier default (patchify ViT)
    python examples/caption_train.py --peft adapter --output-dir runs/caption-adapter
    python examples/caption_train.py --mode prefix --output-dir runs/caption-prefix   # LLaVA-style visual prefix
    python examples/caption_train.py --compare --output-dir runs/caption-compare      # the PEFT table (cross)
    python examples/caption_train.py --compare --mode prefix --output-dir runs/caption-compare-prefix
    python examples/caption_train.py --eval-only                  # re-evaluate runs/caption, rewrite its report
    python examples/caption_train.py --resume                     # continue runs/caption from its checkpoint
    python examples/caption_train.py --ask my_image.png           # caption any image with runs/caption
    python examples/caption_train.py --data coco --data-root ~/data/coco --image-encoder vit_base_patch16_224 \\
        --pretrained --freeze-image-encoder --image-size 224 --decoder gpt2 --max-length 32 --batch-size 32 \\
        --lr 1e-4 --epochs 3 --output-dir runs/caption-coco
    torchrun --nproc_per_node=2 examples/caption_train.py --output-dir runs/caption-ddp

COCO layout under --data-root: annotations/captions_{train,val}2014.json and the folders train2014/, val2014/
(ShapesWorld.export() writes the same layout). Writes --output-dir (runs/caption): run_config.json, tokenizer/,
lm/ (the pretrained tiny language model), adapter/ (the PEFT weights in peft's format), checkpoint/ (the other
trained weights only: image encoder, projector, cross-attention; optimizer state), metrics.jsonl, summary.json,
predictions_val.json (COCO results format; examples/caption_eval.py scores it) and captions.png.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from vlblocks import training as T
from vlblocks.data import CocoCaptions, ShapesWorld, build_word_tokenizer, load_image
from vlblocks.data.caption_batch import caption_tokens, tidy_caption
from vlblocks.data.collate import to_pixel_values
from vlblocks.metrics import caption_scores
from vlblocks.models import load_run
from vlblocks.models.caption_lm import caption_language_model
from vlblocks.models.caption_preset import PEFT_METHODS, CaptionPreset, apply_caption_peft, build_captioner
from vlblocks.models.clip_scorer import load_clip_scorer
from vlblocks.models.trained_view import TrainedView
from vlblocks.peft import save_adapter
from vlblocks.utils import ParameterCount, count_parameters

SCORES = ("BLEU-4", "CIDEr-D", "ROUGE-L")
# flags that say how to run, not what to build: a resumed / loaded run keeps these from the command line
CONTROL = (*T.RUN_CONTROL, "ask")
COMPARE = [  # --compare: the PEFT table's rows, each a change of the flags
    ("full", {"peft": "full"}),
    ("LoRA r=8", {"peft": "lora", "lora_r": 8, "lora_alpha": 16.0}),
    ("LoRA r=16", {"peft": "lora", "lora_r": 16, "lora_alpha": 32.0}),
    ("adapter", {"peft": "adapter"}),
    ("soft prompt", {"peft": "prompt"}),
]


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=["shapes", "coco"], default="shapes")
    g.add_argument("--data-root", type=Path, default=None, help="COCO folder (with --data coco)")
    g.add_argument("--num-scenes", type=T.positive_int, default=8000, help="ShapesWorld train scenes")
    g.add_argument("--val-scenes", type=T.positive_int, default=500, help="validation images")
    g.add_argument(
        "--captions",
        choices=["full", "all"],
        default="full",
        help="ShapesWorld: train on the full caption or all",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--image-encoder", default="tiny-vit", help="tiny-vit | tiny-cnn | a timm / HF name or folder"
    )
    g.add_argument("--pretrained", action="store_true", help="load the image encoder's weights")
    g.add_argument("--freeze-image-encoder", action="store_true")
    g.add_argument("--image-size", type=T.positive_int, default=64)
    g.add_argument("--patch-size", type=T.positive_int, default=8, help="tiny encoders")
    g.add_argument("--image-dim", type=T.positive_int, default=128, help="tiny encoders")
    g.add_argument("--image-depth", type=T.positive_int, default=2, help="tiny encoders")
    g.add_argument(
        "--stem",
        choices=["conv", "patch"],
        default="conv",
        help="tiny-vit: conv stem (Xiao et al. 2021) or patchify",
    )
    g.add_argument(
        "--decoder", default="tiny-gpt2", help="tiny-gpt2 | an HF GPT-2 name or folder (e.g. gpt2)"
    )
    g.add_argument("--dim", type=T.positive_int, default=128, help="tiny decoder width")
    g.add_argument("--depth", type=T.positive_int, default=2, help="tiny decoder layers")
    g.add_argument("--heads", type=T.positive_int, default=4)
    g.add_argument("--max-length", type=T.positive_int, default=48, help="caption tokens with BOS and EOS")
    g.add_argument("--dropout", type=T.fraction, default=0.0)
    g.add_argument("--mode", choices=["cross", "prefix"], default="cross")
    g.add_argument("--peft", choices=PEFT_METHODS, default="lora")
    g.add_argument("--lora-r", type=T.positive_int, default=16)
    g.add_argument("--lora-alpha", type=T.positive_float, default=32.0)
    g.add_argument("--lora-dropout", type=T.fraction, default=0.0)
    g.add_argument("--adapter-bottleneck", type=T.positive_int, default=32)
    g.add_argument("--prompt-tokens", type=T.positive_int, default=10)
    g.add_argument("--lm-steps", type=T.positive_int, default=150, help="tiny decoder: LM pretraining steps")
    g.add_argument("--lm-lr", type=T.positive_float, default=3e-3)
    g = p.add_argument_group("evaluation and use")
    g.add_argument("--eval-batch-size", type=T.positive_int, default=250)
    g.add_argument("--clip-model", default=None, help="also report CLIPScore with this HF CLIPModel")
    g.add_argument(
        "--compare", action="store_true", help="train full, LoRA r=8 / 16, adapter, soft prompt in turn"
    )
    g.add_argument("--ask", type=Path, default=None, help="caption this image with the run in --output-dir")
    T.add_run_args(p, task="caption", epochs=4, batch_size=32, lr=2e-3, weight_decay=0.01)
    args = p.parse_args(argv)
    if args.data == "coco" and args.data_root is None:
        p.error("--data coco needs --data-root")
    if args.resume or args.eval_only or args.ask:  # a run folder describes itself: its own flags win
        args = T.restore_run_args(args, keep=CONTROL, error=p.error)
        if (args.output_dir / "run_config.json").is_file():  # a run saved before --stem had a patchify ViT
            args.stem = T.load_run_config(args.output_dir).get("model", {}).get("stem", "patch")
    return args


# ----------------------------------------------------------------------------- data and model


def build_data(args):
    """(train items {image, image_id, captions}, val items, val references {image_id: captions})."""
    if args.data == "shapes":
        train, val = (
            ShapesWorld(s, num_scenes=n, image_size=args.image_size, seed=args.seed).captions(per_image=True)
            for s, n in (("train", args.num_scenes), ("val", args.val_scenes))
        )
        return train, val, val.references()  # references() reads no image
    root = args.data_root
    try:
        train, val = (
            CocoCaptions(root / "annotations" / f"captions_{s}2014.json", root / f"{s}2014")
            for s in ("train", "val")
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"--data-root {root}: {err}") from None
    n = min(args.val_scenes, len(val))
    return train, torch.utils.data.Subset(val, range(n)), dict(list(val.references().items())[:n])


def build_tokenizer(args, texts: list[str], out: Path, dist):
    """The run's saved tokenizer (--resume), else a word-level one of the training captions or the hub GPT-2's."""
    from transformers import AutoTokenizer

    if args.resume and (out / "tokenizer").is_dir():
        return AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    if args.decoder == "tiny-gpt2":
        tokenizer = build_word_tokenizer(texts)
    else:
        tokenizer = AutoTokenizer.from_pretrained(args.decoder)
    if dist.is_main:
        tokenizer.save_pretrained(out / "tokenizer")
    return tokenizer


def build_model(args, preset, tokenizer, texts: list[str], out: Path, dist, say):
    """The captioner with its PEFT layers; the tiny decoder starts from the LM cached in out/lm (pretrained first)."""
    lm_state = None
    if preset.tiny_decoder:  # rank 0 pretrains (or reuses) the language model, the other ranks read its cache
        settings = dict(steps=args.lm_steps, lr=args.lm_lr, seed=args.seed, main=dist.is_main, say=say)
        lm_state = caption_language_model(preset, tokenizer, texts, out / "lm", **settings)
    T.seed_everything(args.seed)
    model = build_captioner(preset, tokenizer=tokenizer, lm_state=lm_state)
    apply_caption_peft(model, preset)
    return model


def pixels(model, images) -> torch.Tensor:
    """PIL images or uint8 (3, H, W) tensors -> (B, 3, S, S) normalised as the image encoder expects."""
    return to_pixel_values(images, model.image_encoder.image_config)


def train_batch(model, dataset, indices, args, step: int):
    """The model's inputs of one batch (the full or a random caption per image), or None for an unreadable image."""
    items = [dataset[i] for i in indices]
    if not items or any(item is None or item.get("image") is None for item in items):
        return None
    g = torch.Generator().manual_seed(args.seed * 7919 + step)
    full, captions = args.data == "shapes" and args.captions == "full", [item["captions"] for item in items]
    texts = [c[0] if full else c[int(torch.randint(len(c), (1,), generator=g))] for c in captions]
    pixel_values = pixels(model, [item["image"] for item in items])  # (B, 3, S, S)
    tokens = caption_tokens(model.tokenizer, texts, max_length=args.max_length)  # 3 x (B, T)
    return {"pixel_values": pixel_values, **tokens._asdict()}


@torch.no_grad()
def evaluate(model, val, refs, args, dist, **generation) -> dict:
    """Greedy (or `generation`) captions of the validation images (each rank its share) and their scores."""
    model.eval()
    n, b, rows = len(val), args.eval_batch_size, []
    starts = list(range(0, n, b))[dist.rank :: dist.world_size]  # this rank's batches
    for s in T.progress(starts, desc="eval", leave=False, enabled=dist.is_main):
        items = [val[i] for i in range(s, min(s + b, n))]
        items = [it for it in items if it is not None and it.get("image") is not None]
        if items:
            pixel_values = pixels(model, [it["image"] for it in items]).to(dist.device)  # (b, 3, S, S)
            caps = model.generate(pixel_values, max_new_tokens=args.max_length - 1, **generation)
            rows += [{"image_id": it["image_id"], "caption": tidy_caption(c)} for it, c in zip(items, caps)]
    rows = sorted(T.gather_lists(rows), key=lambda r: r["image_id"])
    model.train()
    scores = caption_scores({r["image_id"]: refs[r["image_id"]] for r in rows}, rows).summary()
    scores = dict(zip(SCORES, (scores["Bleu_4"], scores["CIDEr"], scores["ROUGE_L"])))
    return scores | {"predictions": rows}


def clip_score(scorer, val, predictions: list[dict]) -> float:
    """CLIPScore of the predicted captions with their validation images."""
    by_id = {val[i]["image_id"]: val[i]["image"] for i in range(len(val))}
    images = [T.to_pil(by_id[r["image_id"]]) for r in predictions]
    return scorer(images, [r["caption"] for r in predictions], batch_size=64).score


# ----------------------------------------------------------------------------- training


def train(run: T.TrainingRun) -> tuple[dict, ParameterCount]:
    """Train one configuration into `run`'s folder; returns (the final evaluation, the parameter count)."""
    args, dist, out, t0 = run.args, run.dist, run.out, time.perf_counter()
    train_set, val, refs = build_data(args)
    texts = [c for captions in train_set.references().values() for c in captions]  # every training caption
    preset = CaptionPreset.from_dict(vars(args))
    tokenizer = build_tokenizer(args, texts, out, dist)
    model = build_model(args, preset, tokenizer, texts, out, dist, run.say).to(dist.device)
    count = count_parameters(model)
    run.save_config(model=preset.to_dict())
    if len(train_set) // args.batch_size // dist.world_size == 0:
        raise SystemExit(
            f"--batch-size {args.batch_size} x {dist.world_size} exceeds the {len(train_set)} training images"
        )
    total = run.plan(len(train_set), per_batch=args.batch_size, drop_last=True)
    if run.resumed:
        model = load_run(out).model.train().to(dist.device)  # the adapter file and the trained modules
    # what the checkpoint holds: the trained non-PEFT weights (adapter/ beside it), optimizer, schedule
    run.track(model=TrainedView(model), **T.optimizer_for_run(model, args, total))
    run.restore()
    run.say(
        f"model: {count.trainable:,} of {count.total:,} parameters train ({100 * count.trainable / count.total:.2f}%); "
        f"{total} steps of {args.batch_size} x {dist.world_size} images ({time.perf_counter() - t0:.0f}s set-up)"
    )
    scorer = load_clip_scorer(args.clip_model) if args.clip_model else None
    ddp, final = T.wrap_ddp(model, dist), {}
    for _, batches in run.epochs(len(train_set), per_batch=args.batch_size):
        t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
        for indices in run.progress(batches):
            batch = train_batch(model, train_set, indices, args, run.step * dist.world_size + dist.rank)
            loss = ddp(**T.to_device(batch, dist.device)).loss if batch else None  # None: an unreadable image
            # clip the model's gradients: the tracked view holds no parameters of its own
            if not run.optimizer_step(loss, clip_parameters=model.parameters()):
                break
            if args.save_every and run.step % args.save_every == 0:  # optimizer_step saved a checkpoint
                save_peft(model, preset, run)
        if run.epoch_complete:
            t_train, cpu_train = time.perf_counter() - t_epoch, time.process_time() - cpu_epoch
            final = evaluate(model, val, refs, args, dist)
            metrics = {k: final[k] for k in SCORES} | {"train_s": t_train, "train_cpu_s": cpu_train}
            if scorer is not None:
                metrics["CLIPScore"] = clip_score(scorer, val, final["predictions"])
            run.end_epoch(metrics, time_key=None)
        run.save()
        save_peft(model, preset, run)
    if run.completed:
        if dist.is_main:
            report(val, final, run.history, out, count)
        run.say(
            f"done in {time.perf_counter() - t0:.0f}s ({time.process_time():.0f}s CPU time); outputs in {out}"
        )
    elif run.step < run.total:
        run.finish()  # says where it stopped
    return final, count


def save_peft(model, preset: CaptionPreset, run: T.TrainingRun) -> None:
    """The PEFT weights in peft's format beside the checkpoint (main process; none after a non-finite loss)."""
    if preset.peft != "full" and run.dist.is_main and not run.code:
        save_adapter(model.decoder, run.out / "adapter", base_model_name_or_path=preset.decoder)


# ----------------------------------------------------------------------------- report, ask, main


def report(val, final, history, out: Path, count) -> None:
    """Final table, summary.json, predictions_val.json (COCO results) and captions.png."""
    T.write_summary(out, history, trainable_params=count.trainable, total_params=count.total)
    (out / "predictions_val.json").write_text(json.dumps(final["predictions"], indent=1))
    caption_of = {r["image_id"]: r["caption"] for r in final["predictions"]}
    shown = [val[i] for i in range(min(8, len(val)))]  # the first eight, with their first reference
    images, references = [it["image"] for it in shown], [it["captions"][0] for it in shown]
    captions = [caption_of[it["image_id"]] for it in shown]
    T.caption_grid(images, captions, references).save(out / "captions.png")
    print(
        f"\nCIDEr-D {history[-1]['CIDEr-D']:.3f}, BLEU-4 {history[-1]['BLEU-4']:.3f} on {len(final['predictions'])} "
        f"validation images; predictions in {out / 'predictions_val.json'} (score them with examples/caption_eval.py)"
    )


def ask(args) -> int:
    """--ask IMAGE: the greedy caption of an image file by the run in --output-dir."""
    run, image = load_run(args.output_dir), load_image(args.ask)
    max_new_tokens = run.config["args"]["max_length"] - 1
    print(tidy_caption(run.model.generate(pixels(run.model, [image]), max_new_tokens=max_new_tokens)[0]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ask:
        return ask(args)
    dist = T.setup_distributed(device=None if args.device == "auto" else args.device)
    if args.eval_only:  # re-evaluate the run in --output-dir and rewrite its report
        run, out = load_run(args.output_dir), Path(args.output_dir)
        _, val, refs = build_data(args)
        final = evaluate(run.model.to(dist.device), val, refs, args, dist)
        row = {"eval_only": True} | {k: final[k] for k in SCORES}
        history = [*T.read_jsonl(out / "metrics.jsonl", missing_ok=True), row]
        if dist.is_main:
            report(val, final, history, out, count_parameters(run.model))
        return 0
    if args.compare:  # each PEFT method in turn (same data, seed and budget) into <output-dir>/<method>/
        table = dict(metrics=("CIDEr-D", "BLEU-4"), share=("lm",), label=f"{args.mode} mode")
        return T.compare_variants(args, dist, COMPARE, train, task="caption", **table)
    with T.start_run(args, task="caption") as run:
        train(run)
    return run.code


if __name__ == "__main__":
    sys.exit(main())
