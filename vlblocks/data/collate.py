"""Collate VQA question items into model-ready batches: pixels, tokens, answer labels and soft scores.

Turns the item dicts of ``ShapesWorld.vqa()`` / ``VQAv2Dataset`` into the batch of the answer-classification
setup of Teney et al., "Tips and Tricks for Visual Question Answering" (CVPR 2018): normalised pixels, padded
question tokens, the class of the most common answer (hard label) and the official VQA accuracy of every class
(soft scores, for a binary cross-entropy loss). ``None`` items (unreadable images) are dropped and counted.

Augmentation is a small per-image brightness / contrast jitter only: no horizontal flip (it would swap the
answers of "left of" / "right of" questions), no hue or saturation change (colour is an answer), and no crop
(it could cut objects out and change counts).

``to_pixel_values`` is the same resize-and-normalise step for a plain list of images (no questions): what the
recipes and ``ask_vqa`` feed an image encoder.

Shape legend: B batch, S image side, T tokens, K answer classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlblocks._checks import check_int
from vlblocks.constants import IGNORE_INDEX
from vlblocks.data.vqa import AnswerVocab
from vlblocks.encoders.image import ImageConfig

__all__ = ["VQACollator", "image_to_uint8", "stack_images", "to_pixel_values"]


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images (B, 3, H, W) -> (B, 3, S, S), antialiased when shrinking."""
    shrink = images.shape[-1] > size or images.shape[-2] > size
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=shrink, align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _check_tensor_image(image: object) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a PIL image or a uint8 tensor (3, H, W), got {type(image).__name__}")
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image tensor must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}")
    return image


def image_to_uint8(image: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """A PIL image or a uint8 tensor (3, H, W) as a uint8 tensor (3, S, S), resized (bilinear) when needed."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)
    image = _check_tensor_image(image)
    return image if image.shape[1:] == (size, size) else _resize_uint8(image[None], size)[0]


def stack_images(images: Sequence[Image.Image | torch.Tensor], size: int) -> torch.Tensor:
    """Stack PIL images / uint8 tensors (3, H, W) into uint8 (B, 3, S, S); tensors of one size resize together."""
    out: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(images):
        if isinstance(image, Image.Image):
            out[k] = image_to_uint8(image, size)
        else:
            groups.setdefault(tuple(_check_tensor_image(image).shape), []).append(k)
    for shape, indices in groups.items():
        batch = torch.stack([images[k] for k in indices])  # (b, 3, H, W)
        if shape[1:] != (size, size):
            batch = _resize_uint8(batch, size)
        for k, image in zip(indices, batch):
            out[k] = image
    return torch.stack(out)  # (B, 3, S, S)


def to_pixel_values(images: Sequence[Image.Image | torch.Tensor], image_config: ImageConfig) -> torch.Tensor:
    """The pixel values an image encoder takes: images resized to its side and normalised with its mean / std.

    Args:
        images: B PIL images or uint8 tensors (3, H, W), of any sizes (``stack_images``: bilinear resize to S).
        image_config: the encoder's ``ImageConfig`` (``encoder.image_config``): side S, mean and std.

    Returns:
        float32 (B, 3, S, S): ``(pixel / 255 - mean) / std`` per channel.
    """
    if not isinstance(image_config, ImageConfig):
        raise TypeError(f"image_config must be an ImageConfig, got {type(image_config).__name__}")
    return image_config.normalize(stack_images(images, image_config.size).float() / 255)  # (B, 3, S, S)


def _image_config(config: object, size: object, mean: object, std: object) -> ImageConfig:
    """``config``, or (deprecated) an ``ImageConfig`` built from ``image_size`` / ``mean`` / ``std``."""
    old = {"image_size": size, "mean": mean, "std": std}
    given = [name for name, value in old.items() if value is not None]
    if config is not None:
        if not isinstance(config, ImageConfig):
            raise TypeError(f"image_config must be an ImageConfig, got {type(config).__name__}")
        if given:
            raise TypeError(f"pass image_config or the deprecated {given}, not both")
        return config
    if len(given) != 3:
        raise TypeError(
            "image_config is required: pass the image encoder's ImageConfig (encoder.image_config)"
        )
    warnings.warn(
        "VQACollator(image_size=, mean=, std=) is deprecated: pass image_config=encoder.image_config",
        DeprecationWarning,
        stacklevel=3,
    )
    return ImageConfig(check_int("image_size", size, low=1), tuple(mean), tuple(std))  # type: ignore[arg-type]


class VQACollator:
    """Batch VQA items: ``collator(items) -> dict`` (or None when every item is None).

    Args:
        tokenizer: a Hugging Face tokenizer (e.g. from ``build_word_tokenizer``).
        vocab: the ``AnswerVocab`` of the answer classes.
        image_config: the image encoder's ``ImageConfig`` (``encoder.image_config``): output side S
            (``size``) and the per-channel ``mean`` / ``std`` of [0, 1] pixels, validated there.
        image_size, mean, std: deprecated, the old spelling of ``image_config`` (a ``DeprecationWarning``).
        max_length: question tokens are truncated to this length (padding to the longest in the batch).
        augment: small random brightness / contrast jitter (see the module docstring for why nothing else).
        group_images: stack each distinct image (by ``image_id``) once: "pixel_values" is then (M, 3, S, S) and
            "image_index" (B,) says which image each question asks about, so the encoder runs once per image
            (``VQAModel(..., image_index=)``).

    Returns (per batch): "pixel_values" (B, 3, S, S) float32, "input_ids" / "attention_mask" (B, T) long,
    "labels" (B,) long (-100 when the answer is not a class), "scores" (B, K) float32, and the lists
    "answers", "question", "question_type", "question_id", "image_id"; with ``group_images`` also
    "image_index" (B,) long.
    """

    def __init__(
        self,
        tokenizer,
        vocab: AnswerVocab,
        *,
        image_config: ImageConfig | None = None,
        max_length: int = 32,
        augment: bool = False,
        group_images: bool = False,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(vocab, AnswerVocab):
            raise TypeError(f"vocab must be an AnswerVocab, got {type(vocab).__name__}")
        image_config = _image_config(image_config, image_size, mean, std)
        self.max_length = check_int("max_length", max_length, low=2)
        self.tokenizer, self.vocab, self.image_config = tokenizer, vocab, image_config
        self.image_size, self.augment = image_config.size, bool(augment)
        self.mean = torch.tensor(image_config.mean).view(
            1, 3, 1, 1
        )  # (1, 3, 1, 1) broadcasts over (B, 3, S, S)
        self.std = torch.tensor(image_config.std).view(1, 3, 1, 1)
        self.group_images = bool(group_images)
        self.skipped = 0

    def _jitter(self, pixels: torch.Tensor) -> torch.Tensor:
        """Random brightness and contrast in [0.9, 1.1] per image; pixels (B, 3, S, S) in [0, 1]."""
        b = pixels.shape[0]
        brightness = torch.empty(b, 1, 1, 1).uniform_(0.9, 1.1)
        contrast = torch.empty(b, 1, 1, 1).uniform_(0.9, 1.1)
        gray = pixels.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        return ((pixels - gray) * contrast + gray).mul(brightness).clamp(0, 1)

    def __call__(self, items: Sequence[dict | None]) -> dict | None:
        kept = [item for item in items if item is not None]
        dropped = len(items) - len(kept)
        if dropped:
            self.skipped += dropped
            warnings.warn(
                f"VQACollator: skipped {dropped} unreadable item(s) in this batch ({self.skipped} so far)",
                stacklevel=2,
            )
        if not kept:
            return None
        if self.group_images:
            rows: dict[object, int] = {}  # image_id -> row in pixel_values, in order of first appearance
            images = []
            for item in kept:
                if item["image_id"] not in rows:
                    rows[item["image_id"]] = len(images)
                    images.append(item["image"])
            image_index = torch.tensor([rows[item["image_id"]] for item in kept])  # (B,)
        else:
            images = [item["image"] for item in kept]
        pixels = stack_images(images, self.image_size).float().div_(255)  # (B or M, 3, S, S)
        if self.augment:
            pixels = self._jitter(pixels)
        pixels = pixels.sub_(self.mean).div_(self.std)
        questions = [item["question"] for item in kept]
        tokens = self.tokenizer(
            questions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        labels = torch.tensor([self.vocab.encode(item["answer"]) for item in kept], dtype=torch.long)
        labels[labels < 0] = IGNORE_INDEX
        batch = {
            "pixel_values": pixels,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "labels": labels,
            "scores": torch.stack([self.vocab.soft_scores(item["answers"]) for item in kept]),  # (B, K)
            "answers": [list(item["answers"]) for item in kept],
            "question": questions,
            "question_type": [item["question_type"] for item in kept],
            "question_id": [item["question_id"] for item in kept],
            "image_id": [item["image_id"] for item in kept],
        }
        if self.group_images:
            batch["image_index"] = image_index
        return batch
