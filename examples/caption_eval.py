"""Score a COCO-format caption results file: BLEU-1..4, CIDEr-D, ROUGE-L (coco-caption's numbers, no Java),
CLIPScore / RefCLIPScore with a CLIP model; print a table, save per-image scores and the best / worst images.

    python examples/caption_eval.py                     # coco-fakecap (../shared/refdata) if present, else ShapesWorld
    python examples/caption_eval.py --shapes --num-scenes 200           # the ShapesWorld example, built on the fly
    python examples/caption_eval.py --results my_results.json --annotations captions_val2014.json
    python examples/caption_eval.py --results my_results.json --annotations captions_val2014.json \\
        --image-dir val2014/ --clip-model openai/clip-vit-base-patch32          # + CLIPScore / RefCLIPScore
    python examples/caption_eval.py --shapes --clip-model runs/retrieval     # CLIPScore with a retrieval run

The results file is ``[{"image_id": ..., "caption": ...}]``; the images scored are the ones it holds (as in
coco-caption's example). ``--clip-model`` takes a hub name or a local folder of an HF ``CLIPModel``, or a vlblocks
retrieval run folder (``python examples/retrieval_train.py`` writes ``runs/retrieval``; its dual encoder scores
with its own preprocessing and tokenizer, without CLIPScore's "A photo depicts" prefix). Writes, in
``--output-dir`` (``runs/caption_eval``; an earlier evaluation there is replaced only with ``--overwrite``),
``summary.json``, ``scores.json`` (summary + per-image scores) and ``best_worst.png`` (the best and worst images by
CLIPScore, or by CIDEr-D without CLIP, each with its caption and score).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from vlblocks import metrics
from vlblocks import training as T
from vlblocks.data import ShapesWorld
from vlblocks.models.clip_scorer import load_clip_scorer

REFDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "refdata"
FAKECAP = REFDATA / "coco-fakecap"
TILE = 160


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = T.make_parser(__doc__)
    p.add_argument("--results", type=Path, default=None, help="COCO results JSON [{image_id, caption}]")
    p.add_argument("--annotations", type=Path, default=None, help="COCO captions JSON with the references")
    p.add_argument(
        "--image-dir", type=Path, default=None, help="folder of the images (for CLIPScore / pictures)"
    )
    p.add_argument(
        "--clip-model",
        default=None,
        help="HF CLIPModel (hub name or folder) or a vlblocks retrieval run folder (needs images)",
    )
    p.add_argument(
        "--shapes", action="store_true", help="score the ShapesWorld example even if refdata exists"
    )
    p.add_argument("--num-scenes", type=int, default=100, help="ShapesWorld scenes of the example")
    p.add_argument("--image-size", type=int, default=96, help="ShapesWorld image side")
    p.add_argument("--show", type=int, default=4, help="best and worst images drawn in the PNG")
    p.add_argument("--batch-size", type=int, default=32, help="CLIP batch size")
    p.add_argument("--output-dir", type=Path, default=Path("runs/caption_eval"), help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --output-dir")
    args = p.parse_args(argv)
    if (args.results is None) != (args.annotations is None):
        p.error("--results and --annotations go together")
    for name in ("results", "annotations", "image_dir"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            p.error(f"--{name.replace('_', '-')} {path} does not exist")
    if args.results is not None and args.shapes:
        p.error("--shapes scores the built-in example; drop --results / --annotations")
    if args.clip_model is not None and args.results is not None and args.image_dir is None:
        p.error("--clip-model needs --image-dir (CLIPScore looks at the images)")
    for name in ("num_scenes", "show", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 32 <= args.image_size <= 224:
        p.error(f"--image-size must be in [32, 224], got {args.image_size}")
    return args


def shapes_example(num_scenes: int, image_size: int) -> tuple[dict, dict, dict]:
    """References, candidates and images of a ShapesWorld example: each candidate is an image's first caption with
    one word changed for two images in three (a colour, then a shape); the other captions are the references."""
    world = ShapesWorld("val", num_scenes=num_scenes, image_size=image_size)
    view = world.captions(per_image=True)
    all_refs = view.references()
    swaps = [
        dict(zip(world.colors, world.colors[1:] + world.colors[:1])),
        {"circle": "square", "square": "triangle"},
    ]
    refs, cands, images = {}, {}, {}
    for k, (image_id, caps) in enumerate(all_refs.items()):
        words = caps[0].split()
        if k % 3 < 2:  # deterministic corruption: the first swappable word of the kind
            for j, w in enumerate(words):
                if w.strip(".,") in swaps[k % 3]:
                    words[j] = w.replace(w.strip(".,"), swaps[k % 3][w.strip(".,")])
                    break
        refs[image_id], cands[image_id] = caps[1:], " ".join(words)
        images[image_id] = Image.fromarray(view[k]["image"].permute(1, 2, 0).numpy())
    return refs, cands, images


def load_files(results: Path, annotations: Path, image_dir: Path | None) -> tuple[dict, dict, dict]:
    res = json.loads(results.read_text())
    cands = {r["image_id"]: r["caption"] for r in res}
    ann = json.loads(annotations.read_text())
    refs_all: dict = {}
    for a in ann["annotations"]:
        refs_all.setdefault(a["image_id"], []).append(a["caption"])
    refs = {
        i: refs_all.get(i, []) for i in cands
    }  # the images of the results file, as coco-caption's example
    names = {im["id"]: im["file_name"] for im in ann.get("images", [])}
    images = {}
    if image_dir is not None:
        for i in T.progress(cands, desc="images"):
            if (image_dir / names.get(i, "")).is_file():
                images[i] = Image.open(image_dir / names[i]).convert("RGB")
    return refs, cands, images


def best_worst_grid(
    picks: list[tuple[str, object]], per_image: dict, cands: dict, images: dict, rank_key: str
):
    """The best and worst images (grey where the file is missing), each with its score and caption."""
    tiles, texts = [], []
    for tag, i in picks:
        missing = i not in images
        tiles.append(Image.new("RGB", (TILE, TILE), "#bbb") if missing else images[i])
        head = f"{tag} {rank_key} {per_image[i][rank_key]:.2f}" + (" (no image file)" if missing else "")
        texts.append([head, cands[i]])
    return T.image_grid(tiles, texts, cols=len(picks) // 2, cell=TILE, lines=4)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        out = T.prepare_run_dir(args.output_dir, overwrite=args.overwrite)
    except T.RunFolderError as err:
        raise SystemExit(f"error: {err}") from None
    if args.results is not None:
        refs, cands, images = load_files(args.results, args.annotations, args.image_dir)
        source = str(args.results)
    elif FAKECAP.is_dir() and not args.shapes:
        refs, cands, images = load_files(
            FAKECAP / "captions_val2014_fakecap_results.json", FAKECAP / "captions_val2014_subset.json", None
        )
        source = "coco-fakecap"
    else:
        refs, cands, images = shapes_example(args.num_scenes, args.image_size)
        source = f"ShapesWorld val ({args.num_scenes} scenes)"

    scores = metrics.caption_scores(refs, cands)  # PTB tokenisation + BLEU + CIDEr-D + ROUGE-L
    summary, per_image = scores.summary(), scores.per_image()
    rank_key = "CIDEr"
    if args.clip_model is not None:
        try:
            scorer = load_clip_scorer(args.clip_model)
        except (OSError, ValueError) as err:
            raise SystemExit(f"error: --clip-model {args.clip_model}: {err}") from None
        ids = [i for i in cands if i in images]
        clip = scorer(
            [images[i] for i in ids],
            [cands[i] for i in ids],
            references=[refs[i] for i in ids],
            batch_size=args.batch_size,
        )
        summary["CLIPScore"], summary["RefCLIPScore"] = clip.score, clip.ref_score
        for i, c, r in zip(ids, clip.per_caption.tolist(), clip.per_caption_ref.tolist()):
            per_image[i].update(CLIPScore=c, RefCLIPScore=r)
        rank_key = "CLIPScore"
        per_image = {i: v for i, v in per_image.items() if rank_key in v}

    T.say(f"\n{source}: {len(cands)} images\n")
    T.say(T.format_table([{"metric": k, "score": v} for k, v in summary.items()], precision=3))
    report = {
        "source": source,
        "summary": summary,
        "per_image": [{"image_id": i, **v} for i, v in per_image.items()],
    }
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    (out / "summary.json").write_text(json.dumps({"source": source, **summary}, indent=1))
    ranked = sorted(per_image, key=lambda i: per_image[i][rank_key], reverse=True)
    show = min(args.show, len(ranked) // 2 or 1)
    picks = [("best", i) for i in ranked[:show]] + [("worst", i) for i in ranked[::-1][:show]]
    best_worst_grid(picks, per_image, cands, images, rank_key).save(out / "best_worst.png")
    T.say(f"\nwrote {out / 'scores.json'} and {out / 'best_worst.png'} (ranked by {rank_key})")


if __name__ == "__main__":
    main()
