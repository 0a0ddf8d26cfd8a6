"""ZeroShotClassifier: classify images by their similarity to text prompts, with prompt templates and ensembles.

CLIP's zero-shot classifier (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", section 3.1.4): each class name is written into prompt templates ("a photo of a {}."), the text
tower embeds every prompt, and a class's embedding is the L2-normalised mean of its templates' normalised
embeddings (the prompt ensemble). An image's logits are ``logit_scale * image_embed @ class_embeds^T``. The
classifier also scores each template alone, so templates can be compared ("This is a photo of {}" against "This
is not a photo of {}"). It works with a `DualEncoder` and with an HF `CLIPModel` (through `get_text_features` /
`get_image_features`); with a single template its logits equal HF's ``logits_per_image``.

Shapes: B images, C classes, P templates (prompts per class), E embedding width, N images of an evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks._checks import check_positive_int, check_tensor

__all__ = ["ZeroShotClassifier", "ZeroShotResult"]


@dataclass(frozen=True)
class ZeroShotResult:
    """Accuracy of an evaluation: the ensemble's, every template's, and the ensemble's predictions.

    Attributes:
        accuracy: top-1 accuracy of the prompt ensemble.
        per_template: top-1 accuracy of each template alone, keyed by the template, in template order.
        predictions: (N,) long, the ensemble's predicted class per image. labels: (N,) long, the true classes.
    """

    accuracy: float
    per_template: dict[str, float]
    predictions: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)


class ZeroShotClassifier(nn.Module):
    """Zero-shot image classifier over `class_names` from a dual encoder's text and image towers.

    The prompt embeddings are computed once, at construction (under no_grad, in eval mode), and kept as buffers;
    call `refresh()` after changing the model's weights.

    Args:
        model: a `DualEncoder`, or an HF `CLIPModel` (anything with `get_text_features`, `get_image_features` and
            a log `logit_scale` Parameter).
        class_names: the C class names, distinct, written into every template.
        templates: the P prompt templates, distinct, each with one ``{}`` where the class name goes.
        tokenizer: an HF tokenizer for the prompts; default the DualEncoder's (`model.tokenizer`).
        batch_size: prompts embedded per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        *,
        templates: Sequence[str] = ("a photo of a {}.",),
        tokenizer: Any = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self._hf = not hasattr(model, "encode_text") and hasattr(model, "get_text_features")
        if not self._hf and not all(hasattr(model, a) for a in ("encode_text", "encode_image", "logit_scale")):
            raise TypeError(
                "model must be a DualEncoder or an HF CLIPModel (get_text_features / get_image_features), "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.class_names = _check_names("class_names", class_names, "class name")
        self.templates = _check_names("templates", templates, "template")
        for template in self.templates:
            if template.count("{}") != 1:
                raise ValueError(f"templates must each contain '{{}}' exactly once, got {template!r}")
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None or not callable(self.tokenizer):
            raise ValueError("tokenizer must be given (the model has no tokenizer of its own), got None")
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.register_buffer("template_embeds", torch.empty(0), persistent=False)  # (P, C, E)
        self.register_buffer("class_embeds", torch.empty(0), persistent=False)  # (C, E)
        self.refresh()

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return len(self.class_names)

    def prompts(self, template: str) -> list[str]:
        """The C prompts of one template, in class order."""
        return [template.replace("{}", name) for name in self.class_names]

    @torch.no_grad()
    def refresh(self) -> None:
        """(Re)compute every prompt embedding (P, C, E) and the ensemble's class embeddings (C, E)."""
        was_training = self.model.training
        self.model.eval()
        try:
            per_template = [self._embed_texts(self.prompts(t)) for t in self.templates]  # P x (C, E)
        finally:
            self.model.train(was_training)
        self.template_embeds = torch.stack(per_template)  # (P, C, E)
        self.class_embeds = F.normalize(self.template_embeds.mean(dim=0), dim=-1)  # (C, E)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W), preprocessed for the model -> (B, E) unit-norm image embeddings."""
        check_tensor("pixel_values", pixel_values, ndim=4, dtype="float", shape="(B, 3, H, W)")
        if self._hf:
            embeds = _features(self.model.get_image_features(pixel_values=pixel_values))
        else:
            embeds = self.model.encode_image(pixel_values)
        return F.normalize(embeds, dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> logits (B, C) of the prompt ensemble."""
        return self._logits(self.encode_images(pixel_values), self.class_embeds)

    def logits_per_template(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W) -> logits (P, B, C), template p alone in slice p."""
        images = self.encode_images(pixel_values)  # (B, E)
        return torch.stack([self._logits(images, embeds) for embeds in self.template_embeds])

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ZeroShotResult:
        """Top-1 accuracy of the ensemble and of every template over labelled images (eval mode, no grad).

        Args:
            batches: an iterable of ``(pixel_values (B, 3, H, W), labels (B,) int in [0, C))`` pairs, e.g. a
                DataLoader or ``[(pixel_values, labels)]``.

        Returns:
            A `ZeroShotResult`.
        """
        was_training = self.training
        self.eval()
        hits = torch.zeros(len(self.templates), dtype=torch.long)
        predictions, all_labels = [], []
        try:
            for pixel_values, labels in batches:
                labels = self._check_labels(labels, pixel_values)
                images = self.encode_images(pixel_values)  # (B, E)
                per_template = images @ self.template_embeds.transpose(1, 2)  # (P, B, C); the scale keeps argmax
                hits += (per_template.argmax(dim=-1) == labels.to(images.device)).sum(dim=1).cpu()
                predictions.append((images @ self.class_embeds.T).argmax(dim=-1).cpu())  # (B,)
                all_labels.append(labels.cpu())
        finally:
            self.train(was_training)
        if not predictions:
            raise ValueError("batches must yield at least one (pixel_values, labels) batch, got none")
        preds, labels = torch.cat(predictions), torch.cat(all_labels)
        n = labels.numel()
        per_template = {t: float(h) / n for t, h in zip(self.templates, hits.tolist())}
        return ZeroShotResult(float((preds == labels).double().mean()), per_template, preds, labels)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, templates={len(self.templates)}, hf={self._hf}"

    # ------------------------------------------------------------------------------------------ internals

    def _logits(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, E) and (C, E) unit-norm -> (B, C) scaled (and biased, for SigLIP-style models) similarities."""
        scale = self.model.logit_scale.exp() if self._hf else self.model.logit_scale
        logits = scale * images @ classes.T  # (B, C)
        bias = getattr(self.model, "logit_bias", None)
        return logits if bias is None else logits + bias

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        """C texts -> (C, E) unit-norm embeddings, in batches of `batch_size`."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")  # CLIP: 77 tokens
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            if self._hf:
                embeds = _features(self.model.get_text_features(input_ids=ids, attention_mask=mask))
            else:
                embeds = self.model.encode_text(ids, mask)
            out.append(F.normalize(embeds, dim=-1))
        return torch.cat(out)

    def _check_labels(self, labels: object, pixel_values: object) -> torch.Tensor:
        labels = check_tensor("labels", labels, ndim=1, dtype="int", shape="(B,)")
        if isinstance(pixel_values, torch.Tensor) and labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"labels must have one class per image ({pixel_values.shape[0]}), got {labels.shape[0]}"
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels


def _features(out: Any) -> torch.Tensor:
    """HF `get_*_features` output: a tensor (transformers 4) or a model output whose pooler_output it is (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _check_names(name: str, values: object, kind: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name} must hold at least one {kind}, got an empty list")
    bad = [v for v in values if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{name} must hold non-empty strings, got {bad[0]!r}")
    duplicates = sorted({v for v in values if list(values).count(v) > 1})
    if duplicates:
        raise ValueError(f"{name} must be distinct, got {duplicates[0]!r} more than once")
    return tuple(values)
