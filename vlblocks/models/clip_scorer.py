"""CLIPScore / RefCLIPScore of captions with a model named on the command line: an HF ``CLIPModel`` (hub name or
local folder) or a vlblocks retrieval run folder (a trained ``DualEncoder``, read with ``load_run``).

Hessel et al. 2021 ("CLIPScore: A Reference-free Evaluation Metric for Image Captioning") score a caption by the
cosine of its CLIP text embedding with the image's embedding (``vlblocks.metrics.clipscore``). With an HF CLIP
the paper's recipe applies (``clip_model_score``: "A photo depicts " prefix, CLIP image processor, 77 tokens).
A retrieval run scores with its own preprocessing (its image tower's ``ImageConfig``, its tokenizer and
``max_length``) and no prefix, since it was trained on bare captions. The recipes ``caption_eval.py`` and
``llava_caption.py`` both use ``load_clip_scorer``.

Shape legend: B captions (one image each), D embedding width, R references per caption.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlblocks._checks import check_positive_int
from vlblocks.metrics.clipscore import ClipScoreResult, clip_model_score, clip_score, ref_clip_score

__all__ = ["ClipScorer", "load_clip_scorer"]


class ClipScorer:
    """Scores captions for images: ``scorer(images, captions, references=None) -> ClipScoreResult``.

    Built by ``load_clip_scorer``; ``kind`` is ``"hf"`` or ``"run"``, ``name`` what was loaded.
    """

    def __init__(self, kind: str, name: str, model: Any, processor: Any = None, max_length: int = 77) -> None:
        self.kind, self.name, self.model, self.processor, self.max_length = (
            kind,
            name,
            model,
            processor,
            max_length,
        )

    def __repr__(self) -> str:
        return f"ClipScorer(kind={self.kind!r}, name={self.name!r})"

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[Any],
        captions: Sequence[str],
        *,
        references: Sequence[Sequence[str]] | None = None,
        batch_size: int = 32,
    ) -> ClipScoreResult:
        """CLIP-S of B captions (and RefCLIP-S with B lists of references) for B PIL images / uint8 tensors."""
        if self.kind == "hf":
            return clip_model_score(
                self.model, self.processor, images, captions, references=references, batch_size=batch_size
            )
        batch_size = check_positive_int("batch_size", batch_size)
        if len(images) != len(captions) or not captions:
            raise ValueError(
                f"images and captions must be non-empty and of equal length, got {len(images)} and {len(captions)}"
            )
        image_embeds = torch.cat(
            [self._images(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )  # (B, D)
        text_embeds = self._texts(list(captions), batch_size)  # (B, D)
        if references is None:
            return clip_score(image_embeds, text_embeds)
        if len(references) != len(captions) or any(len(r) == 0 for r in references):
            raise ValueError(
                f"references must hold a non-empty list of captions for each of the {len(captions)} captions"
            )
        flat = self._texts([r for refs in references for r in refs], batch_size)  # (sum R_b, D)
        return ref_clip_score(
            image_embeds, text_embeds, list(torch.split(flat, [len(r) for r in references]))
        )

    def _images(self, images: Sequence[Any]) -> torch.Tensor:
        from vlblocks.data.collate import to_pixel_values

        pixels = to_pixel_values(list(images), self.model.image_encoder.image_config)  # (b, 3, S, S)
        return self.model.encode_image(pixels.to(_device(self.model))).float()

    def _texts(self, texts: list[str], batch_size: int) -> torch.Tensor:
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = self.model.tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            ids, mask = (
                tok["input_ids"].to(_device(self.model)),
                tok["attention_mask"].to(_device(self.model)),
            )
            chunks.append(self.model.encode_text(ids, mask).float())
        return torch.cat(chunks)  # (N, D)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_clip_scorer(name_or_path: str | os.PathLike, *, device: str = "cpu") -> ClipScorer:
    """A ``ClipScorer`` for a vlblocks retrieval run folder (``run_config.json`` inside) or an HF ``CLIPModel``.

    Raises:
        ValueError: a run folder of another task than retrieval, or one without a tokenizer.
        OSError: transformers' error for a hub name that is neither cached nor reachable.
    """
    folder = Path(name_or_path)
    if (folder / "run_config.json").is_file():
        from vlblocks.models.run import load_run

        run = load_run(folder, map_location=device)
        if run.task != "retrieval":
            raise ValueError(
                f"--clip-model run folder must hold a retrieval run (a dual encoder), got a {run.task!r} run"
            )
        if run.model.tokenizer is None:
            raise ValueError(f"the retrieval run {folder} has no tokenizer: it cannot encode captions")
        max_length = int(getattr(run.extras.get("preset"), "max_length", 77) or 77)
        return ClipScorer("run", str(folder), run.model.to(device).eval(), max_length=max_length)
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(name_or_path)).to(device).eval()
    processor = CLIPProcessor.from_pretrained(str(name_or_path))
    return ClipScorer("hf", str(name_or_path), model, processor)
