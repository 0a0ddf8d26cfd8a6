"""Pretraining a tiny GPT-2 as a text-only language model on captions, cached in a run folder.

A PEFT comparison only means something on a pretrained language model: LoRA, adapters and soft prompts adapt a
model that already writes the language. Offline there is no GPT-2 checkpoint for a closed ShapesWorld vocabulary,
so the caption recipe first trains the tiny decoder on the training captions alone (next-token prediction, AdamW,
warm-up + cosine), as GPT-2 (Radford et al. 2019) is pretrained on web text, then adapts it to images. The result
is cached as ``<folder>/model.safetensors`` + ``lm.json`` (the decoder config and the pretraining settings) and
reused when the settings match. ``caption_language_model`` does this for a `CaptionPreset`'s tiny decoder under
torchrun too: the main process pretrains (or reads) the cache, the others then read it.

Shapes: B captions, T tokens, V vocabulary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlblocks._checks import check_positive_int, check_positive_number

if TYPE_CHECKING:
    from vlblocks.models.caption_preset import CaptionPreset

__all__ = ["LM_CONFIG", "cached_language_model", "caption_language_model", "pretrain_language_model"]

LM_CONFIG = "lm.json"
LM_WEIGHTS = "model.safetensors"


def pretrain_language_model(
    decoder: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_length: int = 48,
    seed: int = 0,
    progress: Callable[[Any], Any] | None = None,
) -> float:
    """Train `decoder` (a text-only `GPT2Decoder`) on `texts` for `steps` batches drawn at random; returns the mean
    loss of the last 10% of the steps."""
    from vlblocks.data.caption_batch import caption_tokens
    from vlblocks.training.optim import build_optimizer
    from vlblocks.training.schedule import build_scheduler, warmup_steps_for

    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_positive_number("lr", lr)
    if not texts:
        raise ValueError("texts must hold at least one caption, got none")
    g = torch.Generator().manual_seed(seed)
    optimizer = build_optimizer(decoder, lr=lr, weight_decay=0.01)
    scheduler = build_scheduler(optimizer, total_steps=steps, warmup_steps=warmup_steps_for(0.05, steps))
    decoder.train()
    losses = []
    for _ in progress(range(steps)) if progress else range(steps):
        pick = torch.randint(len(texts), (batch_size,), generator=g).tolist()
        batch = caption_tokens(tokenizer, [texts[i] for i in pick], max_length=max_length)
        loss = decoder(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def cached_language_model(
    folder: str | os.PathLike,
    build: Callable[[], nn.Module],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    say: Callable[[str], Any] = print,
    **settings: Any,
) -> dict[str, torch.Tensor]:
    """The state dict of the language model cached in `folder`, pretraining it first (and caching it) when the
    folder holds none or one made with other settings.

    Args:
        folder: the cache folder (e.g. ``runs/caption/lm``).
        build: makes a fresh text-only decoder (called only when pretraining is needed).
        tokenizer, texts, **settings: as `pretrain_language_model` (steps, batch_size, lr, max_length, seed, ...).
    """
    from safetensors.torch import load_file, save_model

    folder = Path(folder)
    decoder = build()
    key = {
        "config": decoder.config.to_dict(),
        "vocab": len(tokenizer),
        "texts": len(texts),
        **{k: v for k, v in settings.items() if k != "progress"},
    }
    meta = folder / LM_CONFIG
    if meta.is_file() and (folder / LM_WEIGHTS).is_file():
        saved = json.loads(meta.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            say(f"language model: reusing the one pretrained in {folder}")
            return load_file(str(folder / LM_WEIGHTS))
        say(f"language model in {folder} was pretrained with other settings: pretraining again")
    say(f"language model: pretraining on {len(texts)} captions for {settings.get('steps')} steps")
    loss = pretrain_language_model(decoder, tokenizer, texts, **settings)
    say(f"language model: final loss {loss:.3f}; cached in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    save_model(decoder, str(folder / LM_WEIGHTS))
    meta.write_text(json.dumps({"key": key, "final_loss": loss}, indent=2), encoding="utf-8")
    return {k: v.detach() for k, v in decoder.state_dict().items()}


def caption_language_model(
    preset: CaptionPreset,
    tokenizer: Any,
    texts: Sequence[str],
    folder: str | os.PathLike,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    main: bool = True,
    say: Callable[[str], Any] = print,
) -> dict[str, torch.Tensor]:
    """The pretrained text-only language model of a `CaptionPreset`'s tiny decoder, cached in `folder`.

    The decoder is ``caption_decoder_config(preset, tokenizer, image=False)``, initialised after seeding every RNG
    with `seed` and pretrained (`cached_language_model`, a progress bar on the main process) on `texts` with
    ``max_length=preset.max_length``. Under torchrun the main process (`main`) pretrains or reads the cache first,
    every process waits at a barrier, then the others read what it cached: every process gets the same weights
    (a state dict read from the cache holds tied weights once), and only the main one writes `folder` or calls
    `say`.
    """
    from vlblocks.decoders import GPT2Decoder
    from vlblocks.models.caption_preset import caption_decoder_config
    from vlblocks.training.distributed import barrier
    from vlblocks.training.run import progress
    from vlblocks.training.seed import seed_everything

    settings = dict(steps=steps, batch_size=batch_size, lr=lr, max_length=preset.max_length, seed=seed)

    def load() -> dict[str, torch.Tensor]:
        seed_everything(seed)  # the fresh decoder's init: the same on every process and every call
        build = lambda: GPT2Decoder(caption_decoder_config(preset, tokenizer, image=False))  # noqa: E731
        bar = lambda it: progress(it, desc="LM pretraining", enabled=main)  # noqa: E731
        quiet = say if main else (lambda message: None)
        return cached_language_model(folder, build, tokenizer, texts, say=quiet, progress=bar, **settings)

    state = load() if main else None
    barrier()  # the other processes read the language model that the main one cached
    return state if main else load()
