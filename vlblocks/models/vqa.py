"""VQAModel: image encoder + text encoder + fusion + answer classifier, VQA as classification over answers.

The standard discriminative VQA pipeline (Antol et al. 2015; Anderson et al. 2018; ViLBERT, Lu et al. 2019;
LXMERT, Tan & Bansal 2019): encode the image and the question separately, fuse the two token streams
(`CoAttentionFusion` or `ConcatFusion`), and classify the pooled vector into one of C frequent answers.
The model is a thin assembly of built submodules; it owns no weights of its own.

Shapes: B batch, H, W image size, T question tokens, Ni / Nt encoder tokens, P pooled width, C answers.
"""

from __future__ import annotations

import torch
from torch import nn

from vlblocks._checks import check_index, check_tensor
from vlblocks.encoders.output import EncoderOutput

__all__ = ["VQAModel"]


class VQAModel(nn.Module):
    """Answer classifier over an image and a question.

    Args:
        image_encoder: module, `pixel_values (B, 3, H, W) -> EncoderOutput` with tokens (B, Ni, Di).
        text_encoder: module, `(input_ids (B, T), attention_mask=(B, T)) -> EncoderOutput` with tokens (B, Nt, Dt).
        fusion: module, `(image_tokens, text_tokens, image_mask=, text_mask=) -> FusionOutput` with pooled (B, P),
            e.g. `CoAttentionFusion` or `ConcatFusion`. A fusion whose class sets `accepts_image_index = True`
            (`CoAttentionFusion`) gets the distinct images' tokens (M, Ni, Di) and `image_index=` instead of the
            tokens gathered per question, so it can project each image once.
        head: module, pooled (B, P) -> logits (B, C), e.g. `MLPHead(fusion.out_dim, C)`.
    """

    def __init__(
        self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module, head: nn.Module
    ) -> None:
        super().__init__()
        for name, module in (
            ("image_encoder", image_encoder),
            ("text_encoder", text_encoder),
            ("fusion", fusion),
            ("head", head),
        ):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        out_dim, head_dim = getattr(fusion, "out_dim", None), getattr(head, "dim", None)
        if isinstance(out_dim, int) and isinstance(head_dim, int) and out_dim != head_dim:
            raise ValueError(f"head.dim must equal fusion.out_dim ({out_dim}), got {head_dim}")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.fusion, self.head = fusion, head

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Answer logits.

        Args:
            pixel_values: (B, 3, H, W), or (M, 3, H, W) distinct images with `image_index`.
            input_ids: (B, T) question token ids.
            attention_mask: (B, T), 1/True on real tokens, 0/False on padding; None means no padding.
                The fusion's text mask is the text encoder's `EncoderOutput.mask` when it returns one
                (it knows about tokens it prepends), else `attention_mask.bool()`.
            image_index: (B,) integer, question b asks about image `image_index[b]`, in [0, M) (negative
                indices are refused, not counted from the end). Each distinct image is encoded once (VQA has
                several questions per image; `VQACollator(group_images=True)`).

        Returns:
            logits (B, C).

        Raises:
            TypeError / ValueError: wrong types or shapes, an empty batch, or `image_index` outside [0, M).
        """
        _check_inputs(pixel_values, input_ids, attention_mask, image_index)
        image_out = _as_encoder_output("image_encoder", self.image_encoder(pixel_values))
        image_tokens, image_mask = image_out.tokens, image_out.mask  # (M or B, Ni, Di), (M or B, Ni) or None
        fuse_kwargs = {}
        if image_index is not None:
            image_mask = None if image_mask is None else image_mask[image_index]  # masks are per question
            if getattr(self.fusion, "accepts_image_index", False):  # CoAttentionFusion: projects each image once
                fuse_kwargs = {"image_index": image_index}
            else:  # (M, Ni, Di) -> (B, Ni, Di); index_select's backward is faster than tokens[index]'s
                image_tokens = image_tokens.index_select(0, image_index)
        text_out = _as_encoder_output(
            "text_encoder", self.text_encoder(input_ids, attention_mask=attention_mask)
        )
        text_mask = text_out.mask
        if text_mask is None and attention_mask is not None:
            text_mask = attention_mask.bool()  # (B, T)
        fused = self.fusion(image_tokens, text_out.tokens, image_mask=image_mask, text_mask=text_mask, **fuse_kwargs)
        return self.head(fused.pooled)

    @torch.no_grad()
    def predict(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Most likely answer indices (B,), computed in eval mode without gradients (the mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            return self(pixel_values, input_ids, attention_mask, image_index=image_index).argmax(dim=-1)
        finally:
            self.train(was_training)


def _check_inputs(
    pixel_values: object, input_ids: object, attention_mask: object, image_index: object
) -> None:
    check_tensor("pixel_values", pixel_values, dtype="float")
    if pixel_values.dim() != 4:  # type: ignore[union-attr]
        raise ValueError(f"pixel_values must have shape (B, 3, H, W), got {tuple(pixel_values.shape)}")  # type: ignore[union-attr]
    check_tensor("input_ids", input_ids, dtype="int")
    if input_ids.dim() != 2:  # type: ignore[union-attr]
        raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")  # type: ignore[union-attr]
    if attention_mask is not None:
        check_tensor("attention_mask", attention_mask)
        if attention_mask.shape != input_ids.shape:  # type: ignore[union-attr]
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "  # type: ignore[union-attr]
                f"got {tuple(attention_mask.shape)}"  # type: ignore[union-attr]
            )
    if image_index is None:
        if pixel_values.shape[0] != input_ids.shape[0]:  # type: ignore[union-attr]
            raise ValueError(
                f"input_ids must have the batch size of pixel_values ({pixel_values.shape[0]}) when image_index "  # type: ignore[union-attr]
                f"is None, got {input_ids.shape[0]}"  # type: ignore[union-attr]
            )
        return
    b, m = input_ids.shape[0], pixel_values.shape[0]  # type: ignore[union-attr]
    check_index("image_index", image_index, size=m, what=f"one of the {m} images", length=b, per="question")


def _as_encoder_output(name: str, out: object) -> EncoderOutput:
    if not isinstance(out, EncoderOutput):
        raise TypeError(f"{name} must return an EncoderOutput, got {type(out).__name__}")
    return out
