"""Ask a trained VQA run a question about any image.

    from vlblocks.models import load_run, ask_vqa
    run = load_run("runs/vqa")
    ask_vqa(run, "scene.png", "what color is the circle?")   # [("red", 0.97), ("blue", 0.01), ...]
"""

from __future__ import annotations

import os

import torch
from PIL import Image

from vlblocks.models.run import LoadedRun

__all__ = ["ask_vqa"]


@torch.no_grad()
def ask_vqa(
    run: LoadedRun,
    image: str | os.PathLike | Image.Image,
    question: str,
    *,
    top_k: int = 5,
) -> list[tuple[str, float]]:
    """The `top_k` most probable answers of a loaded VQA run (``load_run``) with their softmax probabilities.

    Args:
        run: a ``LoadedRun`` of task ``"vqa"``.
        image: an image file path or a PIL image; resized and normalised as the run's image encoder expects.
        question: the question text, truncated to the run's ``max_length`` tokens.
        top_k: how many answers (at most the vocabulary size).
    """
    from vlblocks.data import load_image
    from vlblocks.data.collate import to_pixel_values

    if not isinstance(run, LoadedRun) or run.task != "vqa":
        raise TypeError(f"run must be a LoadedRun of task 'vqa', got {getattr(run, 'task', type(run).__name__)!r}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question must be a non-empty string, got {question!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if not isinstance(image, Image.Image):
        image = load_image(image)
    device = next(run.model.parameters()).device
    pixels = to_pixel_values([image], run.image_config).to(device)  # (1, 3, S, S)
    max_length = int(run.config["model"].get("max_length", 24))
    tokens = run.tokenizer([question], truncation=True, max_length=max_length, return_tensors="pt").to(device)
    probs = run.model(pixels, tokens["input_ids"], tokens["attention_mask"]).softmax(-1)[0]  # (C,)
    top = probs.topk(min(top_k, probs.numel()))
    return [(run.vocab.decode(i), p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
