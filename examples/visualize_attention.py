"""Look inside a ViT: CLS attention maps of chosen layers, attention rollout (Abnar & Zuidema 2020) and the cosine
similarity of the position embeddings (the "grid of grids" of Dosovitskiy et al. 2021, fig. 7), as PNGs; and inside a
captioner: one attention map per generated word (the figure of "Show, Attend and Tell", Xu et al. 2015).

The model is a vit_classify run folder (default runs/vit; when it does not exist, vit_classify's offline default is
trained into it first), a caption_train run folder, or a timm name (--model, with --pretrained for the hub weights).
The images are files given with --images, else a few ShapesWorld validation scenes. Attention is recorded with
vlblocks.hooks.record_attention, which works on timm's fused attention and keeps every layer it does not record on
the fused kernel.

Commands:
    python examples/visualize_attention.py                       # runs/vit (trained first if absent), ShapesWorld
    python examples/visualize_attention.py --run runs/vit-pets --images cat.jpg dog.jpg --layers 0,5,11
    python examples/visualize_attention.py --model vit_small_patch16_224 --pretrained --images cat.jpg
    python examples/visualize_attention.py --run runs/caption    # a captioner (cross or prefix mode)

Writes --output-dir (runs/attention): for a ViT, image<i>_layers.png (the image, the CLS map of each chosen layer,
the rollout), image<i>_rollout.png and image<i>_last_layer.png (overlays at the image's own size) and
pos_embed_similarity.png; for a captioner, image<i>_caption.png: the image, then one panel per generated word (the
end token included) titled with the word. Its maps are the decoder's cross-attention to the image tokens (cross
mode) or the self-attention from each word's query to the image-prefix positions (prefix mode), averaged over the
--layers of the decoder (default all) and over the heads (--head-fusion); the query of a panel is the one that chose
its word.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlblocks import training as T
from vlblocks.data import ShapesWorld, load_image
from vlblocks.data.collate import to_pixel_values
from vlblocks.hooks import (
    apply_colormap,
    attention_grid,
    attention_rollout,
    caption_attention_maps,
    cls_attention_map,
    overlay_heatmap,
    position_embedding_similarity,
    record_attention,
)
from vlblocks.models import load_run

__all__ = ["main", "similarity_grid"]


def parse_args(argv: list[str] | None = None):
    p = T.make_parser(__doc__)
    p.add_argument(
        "--run", type=Path, default=Path("runs") / "vit", help="a vit_classify or caption_train run folder"
    )
    p.add_argument("--model", default=None, help="a timm name or folder instead of --run")
    p.add_argument("--pretrained", action="store_true", help="with --model: load the hub weights")
    p.add_argument(
        "--images", nargs="+", type=Path, default=None, help="image files (default: ShapesWorld val)"
    )
    p.add_argument("--num-images", type=T.positive_int, default=4, help="ShapesWorld scenes when no --images")
    p.add_argument(
        "--display-size", type=T.positive_int, default=256, help="ShapesWorld scenes are shown this large"
    )
    p.add_argument(
        "--layers",
        default=None,
        help="comma-separated block indices (ViT default: first, middle, last; captioner: every decoder layer)",
    )
    p.add_argument("--head-fusion", choices=["mean", "max", "min"], default="mean")
    p.add_argument(
        "--discard-ratio", type=float, default=0.0, help="rollout: lowest fraction dropped per layer"
    )
    p.add_argument("--output-dir", type=Path, default=Path("runs") / "attention")
    p.add_argument("--threads", type=T.nonneg_int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if not 0 <= args.discard_ratio < 1:
        p.error(f"--discard-ratio must be in [0, 1), got {args.discard_ratio}")
    if args.layers is not None:
        try:
            args.layers = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError:
            p.error(f"--layers must be comma-separated integers, got {args.layers!r}")
    if args.model is None and args.run.exists() and not (args.run / "run_config.json").is_file():
        p.error(f"--run {args.run} is not a vit_classify or caption_train run folder (no run_config.json)")
    return args


def _vit_classify():
    """examples/vit_classify.py as a module (this script reads and trains its runs)."""
    path = Path(__file__).resolve().with_name("vit_classify.py")
    spec = importlib.util.spec_from_file_location("vit_classify", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_model(args):
    """(encoder, classifier or None, class names or None) from --model or the run folder."""
    if args.model is not None:
        from vlblocks.encoders import ImageEncoder

        return ImageEncoder.from_pretrained(args.model, pretrained=args.pretrained).eval(), None, None
    recipe = _vit_classify()
    if not (args.run / "run_config.json").is_file():
        T.say(f"no run in {args.run}: training vit_classify's default first (a few minutes)")
        flags = ["--output-dir", str(args.run)] + (["--threads", str(args.threads)] if args.threads else [])
        if recipe.main(flags) != 0:
            raise SystemExit("training failed; see above")
    model, config = recipe.load_run(args.run)
    return model.encoder, model, config["class_names"]


def load_images(args, size: int) -> list[Image.Image]:
    """The --images files, else ShapesWorld validation scenes drawn at the model's input side (as in training)
    and enlarged to --display-size (nearest neighbour) for the pictures."""
    if args.images:
        return [load_image(p) for p in args.images]
    world = ShapesWorld("val", num_scenes=args.num_images, image_size=min(max(size, 32), 224), seed=0)
    side = max(args.display_size, size)
    return [
        Image.fromarray(world.images[i].permute(1, 2, 0).numpy()).resize((side, side), Image.NEAREST)
        for i in range(len(world))
    ]


def similarity_grid(sim: torch.Tensor, *, cell: int = 24, gap: int = 2) -> Image.Image:
    """(h*w, h, w) similarity maps -> one picture: an h x w grid whose cell (i, j) is the map of patch (i, j)."""
    n, h, w = sim.shape  # (h*w, h, w)
    low, high = float(sim.min()), float(sim.max())
    rgb = apply_colormap(((sim - low) / max(high - low, 1e-8)).numpy(), "viridis")  # (h*w, h, w, 3)
    rgb = rgb.repeat(cell // h or 1, axis=1).repeat(cell // w or 1, axis=2)  # (h*w, H', W', 3) upscaled
    ph, pw = rgb.shape[1:3]
    canvas = np.full((h * (ph + gap) + gap, w * (pw + gap) + gap, 3), 255, dtype=np.uint8)
    for k in range(n):
        i, j = divmod(k, w)
        top, left = gap + i * (ph + gap), gap + j * (pw + gap)
        canvas[top : top + ph, left : left + pw] = rgb[k]
    return Image.fromarray(canvas)


def pick_layers(layers: list[int] | None, blocks: int, *, default: list[int]) -> list[int]:
    """--layers (negative counts from the end) as indices into `blocks` layers; exits naming a missing one."""
    layers = default if layers is None else layers
    bad = [i for i in layers if not -blocks <= i < blocks]
    if bad:
        raise SystemExit(f"--layers: the model has blocks 0..{blocks - 1}, got {bad}")
    return [i % blocks for i in layers]


def prefix_attention(model, pixels: torch.Tensor, input_ids: torch.Tensor, layers: list[int]) -> dict:
    """Prefix mode: {layer: (B, T, H, Ni)}, the self-attention from each text position of input_ids (B, T) to the
    Ni image-prefix positions, recorded on one teacher-forced pass (causal: the same as during generation)."""
    image = model.encode(pixels)  # (B, Ni, Di)
    ni, t = image.shape[1], input_ids.shape[1]
    names = {f"transformer.h.{i}.attn": i for i in layers}
    with record_attention(model.decoder, list(names)) as rec:
        model.decoder(input_ids, image)
    # (B, H, Np + T, Np + T) -> the text rows, the image columns (the prefix starts with the image)
    return {i: rec.maps[name][:, :, -t:, :ni].transpose(1, 2) for name, i in names.items()}


def caption_figures(args) -> int:
    """image<i>_caption.png of a caption_train run: the image, then one panel per generated word."""
    run = load_run(args.run)
    model, tokenizer, eos = run.model, run.tokenizer, run.model.decoder.config.eos_token_id
    depth = len(model.decoder.transformer.h)
    layers = pick_layers(args.layers, depth, default=list(range(depth)))
    encoder = model.image_encoder
    images = load_images(args, encoder.image_config.size)
    pixels = to_pixel_values(images, encoder.image_config)  # (B, 3, S, S)
    cross = run.preset.mode == "cross"
    with torch.no_grad():
        out = model.generate_ids(
            pixels,
            max_new_tokens=run.config["args"]["max_length"] - 1,
            return_cross_attentions=layers if cross else None,
        )  # greedy, as the recipe evaluates
        inputs = out.sequences[:, :-1]  # (B, T): the start token and the words but the last
        attn = out.cross_attentions if cross else prefix_attention(model, pixels, inputs, layers)
    prefix = encoder.num_prefix_tokens
    side = math.isqrt(next(iter(attn.values())).shape[-1] - prefix)
    maps = caption_attention_maps(attn, grid=side, prefix_tokens=prefix, head_fusion=args.head_fusion)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for b, image in enumerate(images):
        ids = out.sequences[b, 1:].tolist()
        ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        words = ["<end>" if i == eos else tokenizer.decode([i]).strip() for i in ids]
        picture = attention_grid(image, maps[b, : len(words)], words, image_title="image")
        picture.save(args.output_dir / f"image{b}_caption.png")
        T.say(f"image {b}: {' '.join(words)} ({len(words)} word panels)")
    mode = "cross-attention" if cross else "self-attention to the image prefix"
    T.say(f"{run.preset.mode} mode: {mode} of decoder layers {layers}; PNGs in {args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = args.run / "run_config.json"
    if args.model is None and config.is_file() and json.loads(config.read_text())["task"] == "caption":
        return caption_figures(args)
    encoder, classifier, classes = load_model(args)
    vit = encoder.model
    blocks = len(vit.blocks)
    layers = pick_layers(args.layers, blocks, default=sorted({0, blocks // 2, blocks - 1}))
    grid, prefix = tuple(vit.patch_embed.grid_size), encoder.num_prefix_tokens
    images = load_images(args, encoder.image_config.size)
    pixels = to_pixel_values(images, encoder.image_config)  # (B, 3, S, S)
    with (
        torch.no_grad(),
        record_attention(vit, "blocks.*.attn") as rec,
    ):  # every layer: rollout needs them all
        logits = classifier(pixels) if classifier is not None else encoder(pixels).tokens
    maps = [rec.maps[f"blocks.{i}.attn"] for i in range(blocks)]  # each (B, H, N, N)
    cls_maps = {
        i: cls_attention_map(maps[i], grid=grid, prefix_tokens=prefix, head_fusion=args.head_fusion)
        for i in layers
    }  # each (B, h, w)
    rollout = attention_rollout(
        maps, discard_ratio=args.discard_ratio, head_fusion=args.head_fusion
    )  # (B, N, N)
    rolled = cls_attention_map(rollout, grid=grid, prefix_tokens=prefix)  # (B, h, w)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for b, image in enumerate(images):
        title = "image"
        if classifier is not None:
            prob, pred = logits[b].softmax(-1).max(-1)
            title = f"{classes[pred]} ({prob:.2f})"
        panels = [cls_maps[i][b] for i in layers] + [rolled[b]]
        names = [f"layer {i}" for i in layers] + ["rollout"]
        attention_grid(image, panels, names, image_title=title).save(out / f"image{b}_layers.png")
        overlay_heatmap(image, rolled[b]).save(out / f"image{b}_rollout.png")
        overlay_heatmap(image, cls_maps[layers[-1]][b]).save(out / f"image{b}_last_layer.png")
        T.say(f"image {b}: {title}; {image.size[0]}x{image.size[1]}")
    sim = position_embedding_similarity(vit, grid=grid)  # (h*w, h, w)
    similarity_grid(sim).save(out / "pos_embed_similarity.png")
    T.say(f"layers {layers}, patch grid {grid}; PNGs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
