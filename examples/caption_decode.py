"""Decoding strategies for a trained captioner: greedy, beam search, top-k with temperature, top-p, min-p and text
prompts, each scored with BLEU-4 (%) and CIDEr-D on the validation split: the decoding table of the course reports.

Loads a run folder written by examples/caption_train.py (default runs/caption), captions its validation images
once per row and prints the table; sampled rows draw from a seeded generator, so a rerun gives the same numbers.
A row is a comma-separated list of generation settings (``num_beams``, ``temperature``, ``top_k``, ``top_p``,
``min_p``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``length_penalty``) plus ``prompt`` (text the caption
starts with; the scored caption is the prompt followed by the model's words). A sampling setting without a
temperature samples at temperature 1.

Commands:
    python examples/caption_decode.py                                   # the reports' rows on runs/caption
    python examples/caption_decode.py --run runs/caption-prefix --seed 1
    python examples/caption_decode.py --row greedy --row "top_k=5,temperature=0.1" --row "num_beams=4,length_penalty=0.5"
    python examples/caption_decode.py --prompt "there is" --val-scenes 200

Writes decoding.md and decoding.json into the run folder (or --output).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from vlblocks import training as T
from vlblocks.data import CocoCaptions, ShapesWorld
from vlblocks.data.caption_batch import prompt_tokens, tidy_caption
from vlblocks.data.collate import to_pixel_values
from vlblocks.metrics import caption_scores
from vlblocks.models import load_run

PROMPT = "a picture of"
ROWS = [
    ("greedy", ""),
    ("beam 3", "num_beams=3"),
    ("beam 5", "num_beams=5"),
    ("top-k 50, T=1.0", "top_k=50,temperature=1.0"),
    ("top-k 50, T=0.7", "top_k=50,temperature=0.7"),
    ("top-k 50, T=0.1", "top_k=50,temperature=0.1"),
    ("top-k 5, T=0.1", "top_k=5,temperature=0.1"),
    ("top-p 0.9", "top_p=0.9,temperature=1.0"),
    ("min-p 0.1", "min_p=0.1,temperature=1.0"),
    ("greedy + prompt", "prompt={prompt}"),
    ("top-k 50, T=0.7 + prompt", "top_k=50,temperature=0.7,prompt={prompt}"),
]
SETTINGS = {
    "num_beams": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repetition_penalty": float,
    "no_repeat_ngram_size": int,
    "length_penalty": float,
    "prompt": str,
}


def parse_row(spec: str) -> dict:
    """ "top_k=5,temperature=0.1" -> {"top_k": 5, "temperature": 0.1}; "greedy" or "" -> {}."""
    row: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "greedy":
            continue
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in SETTINGS:
            raise ValueError(f"row setting must be NAME=VALUE with NAME in {sorted(SETTINGS)}, got {part!r}")
        try:
            row[key.strip()] = SETTINGS[key.strip()](value.strip())
        except ValueError:
            raise ValueError(
                f"row setting {key.strip()} must be {SETTINGS[key.strip()].__name__}, got {value!r}"
            ) from None
    if (
        any(k in row for k in ("top_k", "top_p", "min_p"))
        and "temperature" not in row
        and "num_beams" not in row
    ):
        row["temperature"] = 1.0
    return row


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    p.add_argument("--run", type=Path, default=Path("runs/caption"), help="a caption_train.py run folder")
    p.add_argument(
        "--row", action="append", default=None, help="a row's settings (repeatable; replaces the defaults)"
    )
    p.add_argument("--prompt", default=PROMPT, help="the text prompt of the default prompt rows")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (every sampled row starts from it)")
    p.add_argument(
        "--val-scenes", type=T.positive_int, default=None, help="validation images (default: the run's)"
    )
    p.add_argument("--batch-size", type=T.positive_int, default=250)
    p.add_argument(
        "--max-new-tokens", type=T.positive_int, default=None, help="default: the run's max length - 1"
    )
    p.add_argument(
        "--output", type=Path, default=None, help="folder for decoding.md / .json (default: --run)"
    )
    p.add_argument("--threads", type=T.nonneg_int, default=0)
    args = p.parse_args(argv)
    if not (args.run / "run_config.json").is_file():
        p.error(
            f"--run {args.run} holds no caption run; train one first: python examples/caption_train.py "
            f"--output-dir {args.run}"
        )
    rows = [(r, r) for r in args.row] if args.row else [(n, s.format(prompt=args.prompt)) for n, s in ROWS]
    try:
        args.rows = [(name, parse_row(spec)) for name, spec in rows]
    except ValueError as err:
        p.error(str(err))
    return args


def validation(run_args: dict, n: int):
    """The validation images and references the run was evaluated on (ShapesWorld or COCO)."""
    if run_args["data"] == "shapes":
        view = ShapesWorld("val", num_scenes=n, image_size=run_args["image_size"], seed=run_args["seed"])
        view = view.captions(per_image=True)
        return [view[i]["image"] for i in range(n)], list(view.references().items())
    root = Path(run_args["data_root"])
    coco = CocoCaptions(root / "annotations" / "captions_val2014.json", root / "val2014")
    items = [coco[i] for i in range(min(n, len(coco)))]
    items = [it for it in items if it is not None]
    return [it["image"] for it in items], [(it["image_id"], it["captions"]) for it in items]


@torch.no_grad()
def decode(model, images, settings: dict, args) -> list[str]:
    """Captions of every image with one row's settings (prompt text included in the caption)."""
    settings = dict(settings)
    prompt = settings.pop("prompt", None)
    config = model.image_encoder.image_config
    generator = torch.Generator().manual_seed(args.seed)
    out = []
    for s in T.progress(range(0, len(images), args.batch_size), desc="decode", leave=False):
        pixels = to_pixel_values(images[s : s + args.batch_size], config)  # (b, 3, S, S)
        kw = dict(settings, max_new_tokens=args.max_new_tokens, generator=generator)
        if prompt:
            ids, mask = prompt_tokens(model.tokenizer, [prompt] * pixels.shape[0])
            kw |= {"input_ids": ids, "attention_mask": mask}
        out += [tidy_caption(f"{prompt} {c}" if prompt else c) for c in model.generate(pixels, **kw)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    run_args = run.config["args"]
    args.max_new_tokens = args.max_new_tokens or run_args["max_length"] - 1
    images, refs = validation(run_args, args.val_scenes or run_args["val_scenes"])
    references = dict(refs)
    table, examples = [], {}
    for name, settings in T.progress(args.rows, desc="rows"):
        captions = decode(run.model, images, settings, args)
        scores = caption_scores(references, dict(zip(references, captions))).summary()
        table.append(
            {
                "decoding": name,
                "BLEU-4 (%)": 100 * scores["Bleu_4"],
                "CIDEr-D": scores["CIDEr"],
                "distinct": len(set(captions)),
                "example": captions[0],
            }
        )
        examples[name] = captions[:5]
        T.say(T.format_table(table) if len(table) == 1 else T.format_table(table).splitlines()[-1])
    out = args.output or args.run
    out.mkdir(parents=True, exist_ok=True)
    head = (
        f"Decoding table of {args.run} on {len(images)} validation images (seed {args.seed}); "
        f"first image's reference: {refs[0][1][0]!r}\n\n"
    )
    (out / "decoding.md").write_text(head + T.format_table(table) + "\n")
    (out / "decoding.json").write_text(
        json.dumps(
            {
                "run": str(args.run),
                "seed": args.seed,
                "rows": table,
                "settings": dict(args.rows),
                "examples": examples,
            },
            indent=2,
        )
    )
    print("\n" + head + T.format_table(table))
    print(f"\nwritten: {out / 'decoding.md'}, {out / 'decoding.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
