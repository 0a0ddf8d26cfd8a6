"""Zero-shot captioning with LLaVA-1.5 (transformers' LlavaForConditionalGeneration): several instructions in one
run, each scored with CIDEr-D, BLEU-4 and CLIPScore (the course report's prompt analysis).

Every image is captioned once per --instruction through the processor's chat template (``USER: <image>\\n
{instruction} ASSISTANT:``), in batches of left-padded prompts, with the generation flags given. The default model
is llava-hf/llava-1.5-7b-hf (about 14 GB in float16: a GPU is advised). Offline without its weights the script
stops at once and says how to pass a local folder; ``--model tiny-random`` builds a tiny random LLaVA (random CLIP
tower + Llama, a word-level tokenizer, nothing downloaded) that runs the same code path end to end on ShapesWorld.
Its captions are meaningless.

Commands:
    python examples/llava_caption.py --model tiny-random                      # offline, ShapesWorld, seconds
    python examples/llava_caption.py --device cuda \\
        --instruction "Describe the image briefly." --instruction "Write a one-sentence caption."
    python examples/llava_caption.py --model ~/models/llava-1.5-7b-hf --data coco \\
        --annotations captions_val2014.json --image-dir val2014/ --num-images 500 \\
        --clip-model openai/clip-vit-base-patch32 --num-beams 3 --max-new-tokens 40
    python examples/llava_caption.py --data folder --image-dir my_photos/       # captions only, no references

Writes --output-dir (runs/llava_caption): results_<k>.json (COCO results ``[{"image_id", "caption"}]`` of
instruction k), instructions.json, captions.png (the first --show images, under each the caption of every
instruction and a reference), and, when references exist, prompts.md / summary.json (one row per instruction:
CIDEr-D, BLEU-4, CLIPScore with --clip-model, mean caption length). caption_eval.py scores a results file further.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from vlblocks import metrics
from vlblocks import training as T
from vlblocks.data import CocoCaptions, ShapesWorld, load_image
from vlblocks.models.llava import (
    LLAVA_MODEL,
    TINY_RANDOM,
    LlavaUnavailableError,
    build_tiny_llava,
    generate_captions,
    generation_kwargs,
    load_llava,
    resolve_llava,
)

DEFAULT_INSTRUCTIONS = ("Describe the image briefly.", "Write a short caption for this image.")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    p.add_argument("--model", default=LLAVA_MODEL, help=f"hub name, local folder, or {TINY_RANDOM}")
    p.add_argument("--instruction", action="append", default=None, help="an instruction (repeatable)")
    p.add_argument("--data", choices=["shapes", "coco", "folder"], default="shapes")
    p.add_argument("--annotations", type=Path, default=None, help="COCO captions JSON (--data coco)")
    p.add_argument("--image-dir", type=Path, default=None, help="images (--data coco / folder)")
    p.add_argument("--num-images", type=T.positive_int, default=32, help="images captioned (first N)")
    p.add_argument("--image-size", type=T.positive_int, default=96, help="ShapesWorld image side")
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=T.positive_int, default=30)
    g.add_argument("--num-beams", type=T.positive_int, default=1)
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy / beam search")
    g.add_argument("--temperature", type=T.positive_float, default=1.0, help="with --do-sample")
    g.add_argument("--top-p", type=T.positive_float, default=1.0, help="with --do-sample, in (0, 1]")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: float16 on cuda")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=T.positive_int, default=8)
    p.add_argument("--show", type=T.positive_int, default=8, help="images drawn in captions.png")
    p.add_argument("--clip-model", default=None, help="HF CLIP or retrieval run folder for CLIPScore")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each instruction starts from it)")
    p.add_argument("--threads", type=T.nonneg_int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/llava_caption"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    args = p.parse_args(argv)
    if args.top_p > 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.data != "shapes" and (args.image_dir is None or not args.image_dir.is_dir()):
        p.error(f"--data {args.data} needs --image-dir, an existing folder")
    if args.data == "coco" and (args.annotations is None or not args.annotations.is_file()):
        p.error("--data coco needs --annotations, an existing COCO captions JSON")
    args.instruction = args.instruction or list(DEFAULT_INSTRUCTIONS)
    if any(not text.strip() for text in args.instruction):
        p.error("--instruction must not be empty")
    return args


def load_data(args) -> tuple[list, list, dict | None]:
    """(image ids, PIL images, references {image_id: [captions]} or None), the first --num-images."""
    if args.data == "shapes":
        view = ShapesWorld("val", num_scenes=args.num_images, image_size=args.image_size).captions(
            per_image=True
        )
        refs = view.references()
        ids = list(refs)[: args.num_images]
        images = [T.to_pil(view[k]["image"]) for k in range(len(ids))]
        return ids, images, {i: refs[i] for i in ids}
    if args.data == "coco":
        data = CocoCaptions(args.annotations, args.image_dir)
        items = [data[k] for k in range(min(args.num_images, len(data)))]
        items = [item for item in items if item is not None]
        return (
            [x["image_id"] for x in items],
            [x["image"] for x in items],
            {x["image_id"]: x["captions"] for x in items},
        )
    files = sorted(f for f in args.image_dir.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[
        : args.num_images
    ]
    if not files:
        raise SystemExit(f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {args.image_dir}")
    return [f.name for f in files], [load_image(f) for f in files], None


def build_model(args, references: dict | None):
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES.get(args.dtype, torch.float16 if device == "cuda" else torch.float32)
    if args.model == TINY_RANDOM:
        texts = [*args.instruction, *(c for caps in (references or {}).values() for c in caps)]
        model, processor = build_tiny_llava(texts, seed=args.seed)
        return model.to(device=device, dtype=dtype), processor
    try:
        return load_llava(args.model, dtype=dtype, device=device)
    except LlavaUnavailableError as err:
        raise SystemExit(f"error: {err}") from None


def score(instruction: str, results: dict, references: dict, images: dict, clip) -> dict:
    """One row of the prompt table: CIDEr-D, BLEU-4 (coco-caption's, PTB-tokenised), CLIPScore, length."""
    scores = metrics.caption_scores({i: references[i] for i in results}, results)
    row = {"instruction": instruction, "CIDEr-D": scores.cider_d.score, "BLEU-4": scores.bleu.scores[3]}
    if clip is not None:
        ids = list(results)
        row["CLIPScore"] = clip([images[i] for i in ids], [results[i] for i in ids]).score
    row["words"] = sum(len(c.split()) for c in results.values()) / len(results)
    return row


def caption_grid(ids: list, images: list, captions: list[list[str]], references: dict | None, show: int):
    """The first `show` images, under each "[k] caption" for every instruction k and the first reference (grey)."""
    texts = []
    for j, i in enumerate(ids[:show]):
        lines = [f"[{k}] {caps[j]}" for k, caps in enumerate(captions)]
        texts.append(lines + ([(f"ref: {references[i][0]}", "#777")] if references else []))
    return T.image_grid(images[:show], texts, cols=4, cell=224)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.model != TINY_RANDOM:
            resolve_llava(args.model)  # offline without the weights: stop now, before any work
        out = T.prepare_run_dir(args.output_dir, overwrite=args.overwrite)
    except (LlavaUnavailableError, T.RunFolderError) as err:
        raise SystemExit(f"error: {err}") from None
    ids, images, references = load_data(args)
    model, processor = build_model(args, references)
    clip = None
    if args.clip_model is not None and references is not None:
        from vlblocks.models.clip_scorer import load_clip_scorer

        clip = load_clip_scorer(args.clip_model)
    gen = generation_kwargs(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
    )
    T.say(f"{args.model} on {len(ids)} {args.data} images, {model.device}, {model.dtype}; generation: {gen}")
    rows, all_captions = [], []
    for k, instruction in enumerate(args.instruction):
        torch.manual_seed(args.seed)  # each instruction samples from the same seed
        bar = partial(T.progress, desc=f"instruction {k}")
        captions = generate_captions(
            model, processor, images, instruction, batch_size=args.batch_size, generation=gen, progress=bar
        )
        results = dict(zip(ids, captions))
        all_captions.append(captions)
        (out / f"results_{k}.json").write_text(
            json.dumps([{"image_id": i, "caption": c} for i, c in results.items()], indent=1)
        )
        T.say(f"[{k}] {instruction!r} -> {captions[0]!r}")
        if references is not None:
            rows.append(score(instruction, results, references, dict(zip(ids, images)), clip))
    (out / "instructions.json").write_text(
        json.dumps({"model": args.model, "generation": gen, "instructions": args.instruction}, indent=1)
    )
    caption_grid(ids, images, all_captions, references, args.show).save(out / "captions.png")
    if rows:
        table = T.format_table(rows, precision=3)
        T.say("\n" + table)
        (out / "prompts.md").write_text(table + "\n")
        (out / "summary.json").write_text(
            json.dumps({"model": args.model, "generation": gen, "rows": rows}, indent=1)
        )
    T.say(
        f"\nwrote {out}/results_*.json, captions.png"
        + (", prompts.md" if rows else " (no references: no scores)")
    )


if __name__ == "__main__":
    main()
