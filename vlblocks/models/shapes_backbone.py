"""Pretraining a tiny ViT on ShapesWorld so that its frozen patch tokens are worth reading (a backbone for heads).

Offline there is no DINOv2 for a closed world of coloured shapes, so the segmentation recipe first trains a tiny
timm ViT (e.g. ``conv_stem_vit``) on a separate ShapesWorld with one linear classifier on its patch tokens, then
freezes it. Three pretraining tasks (``PRETRAIN_TASKS``):

- ``masks``: each pixel's shape (background / circle / square / triangle): dense labels, a `LinearSegHead`.
- ``objects``: each object's colour-shape pair from the mean of the tokens in its box, and the tokens outside every
  box as background.
- ``counts``: how many objects of each colour-shape pair the scene holds (image-level labels), predicted as the sum
  over the tokens of per-token class probabilities (18 pairs + background) divided by ``min_object_tokens`` = m, so
  that an object must be claimed by at least m tokens (density counting, Lempitsky & Zisserman 2010).

Shapes: N scenes, S x S pixels, P pixels per token side, side = S / P, n = side * side tokens, D width,
18 colour-shape pairs (6 colours x 3 shapes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks.data.shapes import SHAPES, ShapesWorld
from vlblocks.heads.segmentation import LinearSegHead

__all__ = ["PRETRAIN_TASKS", "pretrain_on_shapes", "pretraining_targets"]

PRETRAIN_TASKS = ("masks", "objects", "counts")
_PAIRS = 18  # colour-shape classes; 18 is also the background's index
_NO_OBJECT = -100  # an empty object slot (ignored by cross_entropy)


def pretraining_targets(
    world: ShapesWorld, task: str, patch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(targets, pooling weights or None, classes) of `task` on `world`'s scenes:

    - masks: the shape masks (N, S, S) int64, None, 4 classes.
    - objects: (N, 9) colour-shape classes (0-17; 18 background, -100 no object) and (N, 9, n) pooling weights,
      equal on the tokens whose centre lies in the object's box (the token under its centre for a box holding
      none), row 8 on the tokens outside every box; 19 classes.
    - counts: (N, 18) objects per colour-shape pair (float), None, 19 classes.
    """
    if task not in PRETRAIN_TASKS:
        raise ValueError(f"task must be one of {PRETRAIN_TASKS}, got {task!r}")
    if task == "masks":
        return world.masks.long(), None, 4
    side = world.image_size // patch_size
    centres = (torch.arange(side) + 0.5) * patch_size  # token centres along one axis
    labels, pool = torch.full((len(world), 9), _NO_OBJECT), torch.zeros(len(world), 9, side, side)
    for i in range(len(world)):
        for k, o in enumerate(world.objects(i)):
            labels[i, k] = world.colors.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)
            x, y, w, h = o.bbox
            rows, cols = (centres >= y) & (centres < y + h), (centres >= x) & (centres < x + w)
            inside = rows[:, None] & cols[None, :]  # (side, side) tokens in the box
            if not inside.any():  # a box smaller than a token: the token under its centre
                cx, cy = (min(int(c // patch_size), side - 1) for c in o.center)
                inside[cy, cx] = True
            pool[i, k] = inside / inside.sum()
        outside = pool[i, :8].sum(0) == 0
        labels[i, 8], pool[i, 8] = _PAIRS, outside / outside.sum().clamp(min=1)
    if task == "objects":
        return labels, pool.flatten(2), _PAIRS + 1
    ids = torch.where(labels < 0, _PAIRS + 1, labels)  # 18 (background), 19 (no object): dropped below
    counts = torch.zeros(len(world), _PAIRS + 2).scatter_add_(1, ids, torch.ones(ids.shape))
    return counts[:, :_PAIRS], None, _PAIRS + 1


def _loss(task: str, decoder: LinearSegHead, tokens, images, targets, pool, grid, m: float) -> torch.Tensor:
    """The pretraining loss of one batch: tokens (B, n, D), images (B, 3, S, S), targets / pool of the batch."""
    if task == "masks":  # (B, 4, S, S) per-pixel logits
        return F.cross_entropy(decoder(tokens, grid=grid, size=tuple(images.shape[-2:])), targets)
    if task == "objects":  # (B, 9, 19): 8 objects' boxes and the rest, tokens averaged
        logits = decoder.classifier(torch.einsum("bon,bnd->bod", pool, tokens))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # -100 ignored
    probs = decoder.classifier(tokens).softmax(-1)  # (B, n, 19): 18 pairs + background
    return F.poisson_nll_loss(probs[..., :_PAIRS].sum(1) / m, targets, log_input=False)  # (B, 18) counts


def pretrain_on_shapes(
    encoder: nn.Module,
    world: ShapesWorld,
    *,
    task: str,
    patch_size: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    min_object_tokens: float = 6.0,
    show_progress: bool = True,
    say: Callable[[str], Any] = print,
) -> list[float]:
    """Train `encoder` (an `ImageEncoder` over a timm ViT with ``patch_size``-pixel tokens) in place on `world`'s
    scenes by `task` with one linear classifier on its patch tokens (AdamW, weight decay 0.05, 5% warm-up + cosine;
    the batch order seeded by `seed`, every process the same); says the steps, final loss and time. Returns the
    loss of every step."""
    from vlblocks.training.loop import shard_batches
    from vlblocks.training.optim import build_optimizer
    from vlblocks.training.run import progress
    from vlblocks.training.schedule import build_scheduler

    images = encoder.image_config.normalize(world.images.float() / 255)  # (N, 3, S, S)
    targets, pool, classes = pretraining_targets(world, task, patch_size)
    decoder, grid = LinearSegHead(encoder.dim, classes), encoder.model.patch_embed.grid_size
    model = nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    steps = epochs * (len(images) // batch_size)
    optimizer = build_optimizer(model, lr=lr, weight_decay=0.05)
    scheduler = build_scheduler(optimizer, total_steps=max(steps, 1), warmup_steps=steps // 20)
    t0, c0, losses = time.perf_counter(), time.process_time(), []
    for epoch in range(epochs):
        batches = shard_batches(len(images), per_batch=batch_size, seed=seed, epoch=epoch)
        for idx in progress(batches, desc=f"pretrain {epoch + 1}/{epochs}", enabled=show_progress):
            x = images[idx]  # (B, 3, S, S)
            tokens = encoder(x).tokens[:, encoder.num_prefix_tokens :]  # (B, n, D)
            batch = (targets[idx], None if pool is None else pool[idx])
            loss = _loss(task, decoder, tokens, x, *batch, grid, min_object_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    say(
        f"backbone: tiny ViT pretrained on ShapesWorld {task}, {steps} steps, final loss "
        f"{sum(losses[-20:]) / max(1, len(losses[-20:])):.3f} ({time.perf_counter() - t0:.0f}s wall, "
        f"{time.process_time() - c0:.0f}s CPU)"
    )
    return losses
