"""Concat fusion: the light baseline that joins the two encoders' [CLS] vectors and mixes them with an MLP.

The late-fusion baseline of VQA models (Antol et al. 2015, "VQA: Visual Question Answering", combined the two
modalities by a point-wise operation on global vectors followed by an MLP); here the image and text [CLS] tokens
are concatenated and passed through Linear -> LeakyReLU -> Dropout -> Linear. No token interacts with another,
so it is cheap and a useful control for `CoAttentionFusion`.

Shapes: B batch, Ni image tokens, Nt text tokens, Di / Dt encoder widths, D output width (`dim`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int
from vlblocks.fusion.coattention import _check_streams
from vlblocks.fusion.output import FusionOutput

__all__ = ["ConcatFusion"]


class ConcatFusion(nn.Module):
    """MLP over the concatenated [CLS] vectors of an image and a text encoder.

    Args:
        dim_image: image token width Di.
        dim_text: text token width Dt.
        dim: hidden and output width D (`out_dim`).
        dropout: dropout after the activation.
    """

    def __init__(self, dim_image: int, dim_text: int, *, dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        check_positive_int("dim_image", dim_image)
        check_positive_int("dim_text", dim_text)
        check_positive_int("dim", dim)
        check_dropout("dropout", dropout)
        self.dim_image, self.dim_text, self.dim = dim_image, dim_text, dim
        self.fc1 = nn.Linear(dim_image + dim_text, dim)
        self.act = nn.LeakyReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)

    @property
    def out_dim(self) -> int:
        """Width D of `FusionOutput.pooled`."""
        return self.dim

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        *,
        image_mask: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Fuse the [CLS] tokens.

        Args:
            image_tokens: (B, Ni, Di), [CLS] first.
            text_tokens: (B, Nt, Dt), [CLS] first.
            image_mask, text_mask: (B, Ni) / (B, Nt) bool or None; validated, otherwise unused (only the
                [CLS] tokens, always real, are read).

        Returns:
            FusionOutput(pooled (B, D), image_tokens and text_tokens unchanged).
        """
        _check_streams(image_tokens, text_tokens, image_mask, text_mask, self.dim_image, self.dim_text)
        joint = torch.cat([image_tokens[:, 0], text_tokens[:, 0]], dim=-1)  # (B, Di + Dt)
        pooled = self.fc2(self.drop(self.act(self.fc1(joint))))  # (B, D)
        return FusionOutput(pooled, image_tokens, text_tokens)

    def extra_repr(self) -> str:
        return f"dim_image={self.dim_image}, dim_text={self.dim_text}, dim={self.dim}"
