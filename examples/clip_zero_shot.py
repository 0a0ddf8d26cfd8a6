"""Zero-shot image classification with a dual encoder: prompt templates, one accuracy per template, and the ensemble.

CLIP's zero-shot classifier (Radford et al. 2021, section 3.1.4): every class name is written into each prompt
template, the text tower embeds the prompts, and an image takes the class whose prompt embedding is most similar to
its own; the prompt ensemble averages a class's template embeddings. By default it classifies ShapesWorld's
classification view on single-object scenes (1,000 validation scenes, label: the object's shape; measured 0.99
with the ensemble) with the retrieval recipe's model in runs/retrieval, training it first when it is missing (a few
minutes). --max-objects N > 1 classifies cluttered scenes by the shape of the object nearest the centre (harder).
Any HF CLIP (hub id or save_pretrained folder) or retrieval run folder can be --model; any image folder with one
sub-folder per class can be --image-dir.

Commands:
    python examples/clip_zero_shot.py                          # ShapesWorld, the runs/retrieval model
    python examples/clip_zero_shot.py --max-objects 5          # up to 5 objects: the central object's shape
    python examples/clip_zero_shot.py --template "a {} in the center of the image" --template "a {}"
    python examples/clip_zero_shot.py --model openai/clip-vit-base-patch32 --image-dir ~/data/pets/val \\
        --template "This is a photo of {}" --template "This is not a photo of {}" --template "No {}, no score." \\
        --output-dir runs/zero_shot-clip

Writes --output-dir (runs/zero_shot): results.md and results.json (accuracy per template and of the ensemble) and
confusion.png (the ensemble's confusion matrix, rows the true class).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from vlblocks import training as T
from vlblocks.data import ShapesWorld, load_image
from vlblocks.data.collate import to_pixel_values
from vlblocks.models import DualEncoder, ZeroShotClassifier, load_run

DEFAULT_RUN = Path("runs") / "retrieval"
# in the words of ShapesWorld's captions (the retrieval model's tokenizer knows no other word); "in the center" is
# for --max-objects > 1 (the label is the central object's), and costs nothing on single-object scenes
SHAPES_TEMPLATES = (
    "a {} in the center of the image",
    "a small {} in the center",
    "a large {} in the center",
    "one shape: a small {} in the center",
    "one shape: a large {} in the center",
    "there is only one shape: a {}",
)
PHOTO_TEMPLATES = ("a photo of a {}.", "This is a photo of {}", "a picture of a {}", "a {} in the center")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    p.add_argument(
        "--model", default=str(DEFAULT_RUN), help="a retrieval run folder or an HF CLIP name / folder"
    )
    p.add_argument("--template", action="append", default=None, help="a prompt with {} (repeatable)")
    p.add_argument("--image-dir", type=Path, default=None, help="one sub-folder of images per class")
    p.add_argument("--num-scenes", type=T.positive_int, default=1000, help="ShapesWorld validation scenes")
    p.add_argument("--image-size", type=T.positive_int, default=64, help="ShapesWorld image side")
    p.add_argument(
        "--max-objects",
        type=T.positive_int,
        default=1,
        help="ShapesWorld objects per scene at most (1: single-object scenes, the label is the object's shape; "
        "more: the label is the shape of the object nearest the centre)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=T.positive_int, default=250)
    p.add_argument("--output-dir", type=Path, default=Path("runs") / "zero_shot")
    p.add_argument("--threads", type=T.nonneg_int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    for template in args.template or ():
        if template.count("{}") != 1:
            p.error(f"--template must contain '{{}}' exactly once, got {template!r}")
    if args.image_dir is not None and not args.image_dir.is_dir():
        p.error(f"--image-dir {args.image_dir} is not a folder")
    return args


def load_model(args) -> DualEncoder:
    """The dual encoder of a run folder or an HF CLIP; trains the retrieval recipe's default run when --model is
    the default folder and holds none yet."""
    folder = Path(args.model)
    if not (folder / "run_config.json").is_file() and folder == DEFAULT_RUN:
        print(
            f"{folder} holds no trained model: training the retrieval recipe's default first (a few minutes)"
        )
        script = Path(__file__).resolve().parent / "retrieval_train.py"
        extra = ["--threads", str(args.threads)] if args.threads else []
        if subprocess.run([sys.executable, str(script), "--output-dir", str(folder), *extra]).returncode:
            raise SystemExit("the retrieval training failed; see its output above")
    if (folder / "run_config.json").is_file():
        return load_run(folder).model
    try:
        return DualEncoder.from_pretrained(args.model).eval()
    except (OSError, ValueError) as err:
        raise SystemExit(f"--model {args.model}: {err}") from None


def load_images(args) -> tuple[list, list[int], list[str]]:
    """(images, labels, class names): ShapesWorld's classification view, or --image-dir's sub-folders."""
    if args.image_dir is None:
        view = ShapesWorld(
            "val",
            num_scenes=args.num_scenes,
            image_size=args.image_size,
            seed=args.seed,
            max_objects=args.max_objects,
        )
        view = view.classification()
        scenes = (
            "single-object scenes" if args.max_objects == 1 else f"scenes of 1 to {args.max_objects} objects"
        )
        label = (
            "the object's shape" if args.max_objects == 1 else "the shape of the object nearest the centre"
        )
        print(f"ShapesWorld classification view: {scenes}, label = {label}")
        return [view[i]["image"] for i in range(len(view))], view.labels(), list(view.class_names)
    classes = sorted(d for d in args.image_dir.iterdir() if d.is_dir())
    images, labels = [], []
    for label, folder in enumerate(classes):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(load_image(path))
                labels.append(label)
    if len(classes) < 2 or not images:
        raise SystemExit(f"--image-dir {args.image_dir} must hold at least 2 class folders with images")
    return images, labels, [d.name.replace("_", " ") for d in classes]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args)
    images, labels, class_names = load_images(args)
    templates = args.template or list(SHAPES_TEMPLATES if args.image_dir is None else PHOTO_TEMPLATES)
    classifier = ZeroShotClassifier(model, class_names, templates=templates)
    config = model.image_encoder.image_config
    batches = (
        (
            to_pixel_values(images[s : s + args.batch_size], config),
            torch.tensor(labels[s : s + args.batch_size]),
        )
        for s in T.progress(range(0, len(images), args.batch_size), desc="classify")
    )
    result = classifier.evaluate(batches)
    rows = [{"template": t, "accuracy": a} for t, a in result.per_template.items()]
    rows.append({"template": f"ensemble of {len(templates)}", "accuracy": result.accuracy})
    chance = max(labels.count(c) for c in set(labels)) / len(labels)
    table = T.format_table(rows)
    print(
        f"{len(images)} images, {len(class_names)} classes ({', '.join(class_names)}); majority class {chance:.3f}"
    )
    print(table)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    summary = {"model": args.model, "classes": class_names, "images": len(images), "majority": chance}
    summary["max_objects"] = args.max_objects if args.image_dir is None else None  # the ShapesWorld view
    summary |= {"per_template": result.per_template, "ensemble": result.accuracy}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    matrix = torch.zeros(len(class_names), len(class_names), dtype=torch.long)
    matrix.index_put_((result.labels, result.predictions), torch.ones_like(result.labels), accumulate=True)
    confusion_png(matrix, class_names).save(out / "confusion.png")
    print(f"wrote {out / 'results.md'}, results.json and confusion.png")
    return 0


def confusion_png(matrix: torch.Tensor, names: list[str], cell: int = 72):
    """A PIL picture of a (C, C) confusion matrix: rows the true class, columns the prediction; darker = more of
    the row; every cell shows its count."""
    from PIL import Image, ImageDraw

    c = len(names)
    margin = 8 * max(len(n) for n in names) + 16
    image = Image.new("RGB", (margin + c * cell + 8, margin + c * cell + 8), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, margin - 16), "true \\ predicted", fill="gray")
    shares = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)  # (C, C) row-normalised
    for i in range(c):
        draw.text((4, margin + i * cell + cell // 2 - 5), names[i], fill="black")  # true class, left
        draw.text((margin + i * cell + 4, margin - 16), names[i][: cell // 7], fill="black")  # predicted, top
        for j in range(c):
            level = int(255 * (1 - float(shares[i, j])))
            box = (
                margin + j * cell,
                margin + i * cell,
                margin + (j + 1) * cell - 2,
                margin + (i + 1) * cell - 2,
            )
            draw.rectangle(box, fill=(level, level, 255))
            ink = "white" if level < 128 else "black"
            draw.text((box[0] + 6, box[1] + cell // 2 - 5), str(int(matrix[i, j])), fill=ink)
    return image


if __name__ == "__main__":
    sys.exit(main())
