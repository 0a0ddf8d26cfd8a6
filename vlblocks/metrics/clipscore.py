"""CLIPScore and RefCLIPScore (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
EMNLP 2021), from embeddings or straight from a model.

``CLIP-S(c, v) = w * max(cos(c, v), 0)`` with ``w = 2.5``; ``RefCLIP-S(c, R, v)`` is the harmonic mean of CLIP-S
and ``max(max_r cos(c, r), 0)`` over the reference captions r. Scores are per caption, plus their mean. The paper's
recipe for a CLIP model (the "A photo depicts " prefix on every caption and reference, the CLIP image processor,
texts truncated to CLIP's 77 tokens) is ``clip_model_score``; ``encoder_clip_score`` scores with any model that has
``encode_image`` / ``encode_text`` (open_clip models, vlblocks dual encoders) on inputs already prepared for it.

Shape legend: B captions (one image each), D embedding width, R references per caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vlblocks._checks import check_positive_int, check_positive_number, check_tensor

__all__ = ["ClipScoreResult", "clip_model_score", "clip_score", "encoder_clip_score", "ref_clip_score"]

CLIP_PREFIX = "A photo depicts "


@dataclass(frozen=True)
class ClipScoreResult:
    """``score``: mean CLIP-S; ``per_caption`` (B,). With references, ``ref_score`` / ``per_caption_ref`` (B,)
    hold RefCLIP-S (None otherwise)."""

    score: float
    per_caption: torch.Tensor  # (B,)
    ref_score: float | None = None
    per_caption_ref: torch.Tensor | None = None  # (B,)


def _check_pair(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    check_tensor("image_embeds", image_embeds, ndim=2, dtype="float", shape="(B, D)")
    check_tensor("text_embeds", text_embeds, ndim=2, dtype="float", shape="(B, D)")
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds and text_embeds must have the same shape (B, D), got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor, *, w: float = 2.5) -> ClipScoreResult:
    """CLIP-S of B captions from their image and text embeddings (any scale; they are L2-normalised here).

    Args:
        image_embeds: (B, D) image embeddings.
        text_embeds: (B, D) embeddings of the captions, row b describing image b.
        w: the rescaling weight (2.5 in the paper).
    """
    w = check_positive_number("w", w)
    _check_pair(image_embeds, text_embeds)
    cos = F.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1, eps=1e-12)  # (B,)
    per = w * cos.clamp(min=0)
    return ClipScoreResult(float(per.mean()), per.to(image_embeds.dtype))


def ref_clip_score(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    ref_embeds: torch.Tensor | Sequence[torch.Tensor],
    *,
    w: float = 2.5,
) -> ClipScoreResult:
    """CLIP-S and RefCLIP-S: harmonic mean of CLIP-S and ``max(max_r cos(text, ref_r), 0)``.

    Args:
        image_embeds, text_embeds: (B, D) as in ``clip_score``.
        ref_embeds: (B, R, D) reference embeddings, or a list of B tensors (R_b, D) when the counts differ.
        w: the rescaling weight of CLIP-S.
    """
    clip = clip_score(image_embeds, text_embeds, w=w)
    refs = list(ref_embeds) if not isinstance(ref_embeds, torch.Tensor) else list(ref_embeds.unbind(0))
    if isinstance(ref_embeds, torch.Tensor):
        check_tensor("ref_embeds", ref_embeds, ndim=3, dtype="float", shape="(B, R, D)")
    if len(refs) != text_embeds.shape[0]:
        raise ValueError(
            f"ref_embeds must hold references for B={text_embeds.shape[0]} captions, got {len(refs)}"
        )
    text = F.normalize(text_embeds.double(), dim=-1, eps=1e-12)
    best = []
    for b, ref in enumerate(refs):
        check_tensor(f"ref_embeds[{b}]", ref, ndim=2, dtype="float", shape="(R, D)")
        if ref.shape[-1] != text.shape[-1]:
            raise ValueError(f"ref_embeds[{b}] must have width D={text.shape[-1]}, got {tuple(ref.shape)}")
        best.append((F.normalize(ref.double(), dim=-1, eps=1e-12) @ text[b]).max())
    ref_part = torch.stack(best).clamp(min=0)  # (B,)
    clip_part = clip.per_caption.double()
    denom = clip_part + ref_part
    harmonic = torch.where(
        denom > 0, 2 * clip_part * ref_part / denom.clamp(min=1e-300), torch.zeros_like(denom)
    )
    return ClipScoreResult(
        clip.score, clip.per_caption, float(harmonic.mean()), harmonic.to(clip.per_caption.dtype)
    )


def _features(out: Any) -> torch.Tensor:
    """HF ``get_*_features`` return a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def clip_model_score(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    captions: Sequence[str],
    *,
    references: Sequence[Sequence[str]] | None = None,
    prefix: str = CLIP_PREFIX,
    w: float = 2.5,
    batch_size: int = 64,
) -> ClipScoreResult:
    """CLIP-S (and RefCLIP-S with ``references``) of captions for images with an HF ``CLIPModel``.

    Args:
        model: a ``transformers.CLIPModel`` (eval mode is the caller's choice; gradients are off here).
        processor: its ``CLIPProcessor`` (image processor + tokenizer).
        images: B PIL images (or anything the image processor takes).
        captions: B captions; each is prefixed with ``prefix`` and truncated to 77 tokens, as in the paper.
        references: B lists of reference captions (prefixed and truncated the same way).
        w: the rescaling weight.
        batch_size: images / texts per forward pass.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if len(images) != len(captions) or not captions:
        raise ValueError(
            f"images and captions must be non-empty and of equal length, got {len(images)} and {len(captions)}"
        )
    device = next(model.parameters()).device
    max_len = min(77, getattr(processor.tokenizer, "model_max_length", 77) or 77)

    def embed_texts(texts: list[str]) -> torch.Tensor:
        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = processor.tokenizer(
                [prefix + t for t in texts[i : i + batch_size]],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            ).to(device)
            chunks.append(_features(model.get_text_features(**tok)).float())
        return torch.cat(chunks)  # (N, D)

    chunks = []
    for i in range(0, len(images), batch_size):
        pixels = processor.image_processor(images=list(images[i : i + batch_size]), return_tensors="pt")
        chunks.append(
            _features(model.get_image_features(pixel_values=pixels["pixel_values"].to(device))).float()
        )
    image_embeds, text_embeds = torch.cat(chunks), embed_texts(list(captions))
    if references is None:
        return clip_score(image_embeds, text_embeds, w=w)
    return ref_clip_score(image_embeds, text_embeds, _embed_refs(references, len(captions), embed_texts), w=w)


def _embed_refs(references: Sequence[Sequence[str]], num: int, embed_texts: Any) -> list[torch.Tensor]:
    if len(references) != num or any(len(r) == 0 for r in references):
        raise ValueError(f"references must hold a non-empty list of captions for each of the {num} captions")
    flat = [r for refs in references for r in refs]
    embeds = embed_texts(flat)  # (sum R_b, D)
    return list(torch.split(embeds, [len(r) for r in references]))


@torch.no_grad()
def encoder_clip_score(
    model: Any,
    images: Any,
    texts: Any,
    *,
    ref_texts: Any = None,
    refs_per_caption: int | None = None,
    w: float = 2.5,
) -> ClipScoreResult:
    """CLIP-S (and RefCLIP-S) with any model that has ``encode_image`` / ``encode_text``.

    ``images`` and ``texts`` are whatever the model's encoders take (pixel tensors, token ids), B of each;
    ``ref_texts`` holds B * R references in caption order (R = ``refs_per_caption``), encoded in one call.
    """
    for name in ("encode_image", "encode_text"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must have an {name} method, got {type(model).__name__}")
    image_embeds = model.encode_image(images).float()  # (B, D)
    text_embeds = model.encode_text(texts).float()  # (B, D)
    if ref_texts is None:
        return clip_score(image_embeds, text_embeds, w=w)
    r = check_positive_int("refs_per_caption", refs_per_caption)
    ref = model.encode_text(ref_texts).float()  # (B * R, D)
    if ref.shape[0] != image_embeds.shape[0] * r:
        raise ValueError(
            f"ref_texts must encode to B * R = {image_embeds.shape[0] * r} rows, got {ref.shape[0]}"
        )
    return ref_clip_score(
        image_embeds, text_embeds, ref.reshape(image_embeds.shape[0], r, -1), w=w
    )  # (B, R, D)
