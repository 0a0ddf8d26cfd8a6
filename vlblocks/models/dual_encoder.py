"""DualEncoder: an image tower and a text tower projected into one embedding space, scored by cosine similarity.

The dual-encoder (two-tower) model of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"), ALIGN (Jia et al. 2021) and SigLIP (Zhai et al. 2023): each tower encodes its input alone,
its summary token (`EncoderOutput.cls`) is projected to `embed_dim` and L2-normalised, and the similarity logits
are ``logit_scale * image_embeds @ text_embeds^T (+ logit_bias)``. Trained with `contrastive_loss` or `siglip_loss`
on the output embeddings; used for retrieval (`retrieval_recall`) and zero-shot classification
(`ZeroShotClassifier`). `DualEncoder.from_pretrained` loads an HF `CLIPModel` (hub id or folder) behind the same
interface: its towers as `ImageEncoder` / `TextEncoder`, its projections (the vision post-LayerNorm moves into
the image projection) and its logit scale, so the embeddings and logits equal HF's.

Shapes: B batch (Bi images, Bt texts), T text tokens, D tower width, E embedding width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks._checks import check_finite_number, check_positive_int
from vlblocks.encoders.output import EncoderOutput
from vlblocks.losses.common import log_scale_from_temperature

__all__ = ["DualEncoder", "DualEncoderOutput"]


@dataclass
class DualEncoderOutput:
    """What `DualEncoder.forward` returns.

    Attributes:
        logits_per_image: (Bi, Bt) scaled similarities (plus the bias, if any); row i scores image i.
        logits_per_text: (Bt, Bi), its transpose.
        image_embeds: (Bi, E) L2-normalised image embeddings.
        text_embeds: (Bt, E) L2-normalised text embeddings.
        logit_scale: 0-d tensor, the scale 1 / temperature (what `contrastive_loss` takes).
        logit_bias: 0-d tensor or None (SigLIP-style models).
    """

    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor | None


class DualEncoder(nn.Module):
    """Two towers, two projections, a (learnable) logit scale and optionally a logit bias.

    Args:
        image_encoder: module, ``pixel_values (B, 3, H, W) -> EncoderOutput`` (e.g. `ImageEncoder`), with an int
            attribute ``dim`` unless `image_projection` is given.
        text_encoder: module, ``(input_ids (B, T), attention_mask=(B, T)) -> EncoderOutput`` (e.g. `TextEncoder`),
            with ``dim`` unless `text_projection` is given. Its ``tokenizer`` attribute, if any, is `tokenizer`.
        embed_dim: E, the width of the shared embedding space.
        image_projection, text_projection: modules mapping the summary token (B, D) to (B, E); default
            ``nn.Linear(dim, embed_dim, bias=False)`` (CLIP's).
        temperature: initial (or fixed) temperature; the scale is ``1 / temperature``, held as its log.
        learnable_temperature: the log scale (and the bias) are Parameters (True) or buffers (False).
        max_scale: the scale is clamped at this value (CLIP: 100).
        logit_bias: None (CLIP), or the initial bias added to every logit (SigLIP: -10 with temperature 0.1).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        embed_dim: int,
        image_projection: nn.Module | None = None,
        text_projection: nn.Module | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_scale: float = 100.0,
        logit_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        for name, module in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_projection = image_projection or _default_projection("image_encoder", image_encoder, embed_dim)
        self.text_projection = text_projection or _default_projection("text_encoder", text_encoder, embed_dim)
        log_scale = log_scale_from_temperature(temperature, max_scale)
        self.max_scale, self.learnable_temperature = float(max_scale), learnable_temperature
        _scalar(self, "log_logit_scale", log_scale, learnable_temperature)
        if logit_bias is None:
            self.logit_bias: torch.Tensor | None = None
        else:
            _scalar(self, "logit_bias", check_finite_number("logit_bias", logit_bias), learnable_temperature)

    @property
    def tokenizer(self) -> Any:
        """The text encoder's tokenizer (None when it has none)."""
        return getattr(self.text_encoder, "tokenizer", None)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale 1 / temperature, a 0-d tensor: ``exp(log_logit_scale)`` clamped at `max_scale`."""
        return self.log_logit_scale.exp().clamp(max=self.max_scale)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, 3, H, W), normalised as the image encoder expects -> (B, E) unit-norm embeddings."""
        out = _as_encoder_output("image_encoder", self.image_encoder(pixel_values))
        return F.normalize(self.image_projection(out.cls), dim=-1)  # (B, D) -> (B, E)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) 1 / True on real tokens -> (B, E) unit-norm embeddings."""
        out = _as_encoder_output("text_encoder", self.text_encoder(input_ids, attention_mask=attention_mask))
        return F.normalize(self.text_projection(out.cls), dim=-1)  # (B, D) -> (B, E)

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(Bi, E), (Bt, E) unit-norm embeddings -> (Bi, Bt) logits: scale * cosine (+ bias)."""
        logits = self.logit_scale * image_embeds @ text_embeds.T  # (Bi, Bt)
        return logits if self.logit_bias is None else logits + self.logit_bias

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> DualEncoderOutput:
        """Embed Bi images and Bt texts and score every pair.

        Args:
            pixel_values: (Bi, 3, H, W). input_ids: (Bt, T). attention_mask: (Bt, T) or None.

        Returns:
            A `DualEncoderOutput`; for training, ``contrastive_loss(out.image_embeds, out.text_embeds,
            out.logit_scale, normalize=False)`` (needs Bi == Bt, pair i = (image i, text i)).
        """
        image_embeds = self.encode_image(pixel_values)
        text_embeds = self.encode_text(input_ids, attention_mask)
        logits = self.similarity(image_embeds, text_embeds)
        return DualEncoderOutput(logits, logits.T, image_embeds, text_embeds, self.logit_scale, self.logit_bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, max_scale={self.max_scale:g}, bias={self.logit_bias is not None}"

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> DualEncoder:
        """An HF `CLIPModel` (hub id such as "openai/clip-vit-base-patch32", or a `save_pretrained` folder).

        The image tower becomes an `ImageEncoder` (its preprocessing read from the checkpoint's image processor),
        the text tower a `TextEncoder` with the checkpoint's tokenizer; the embeddings, the logit scale and so
        the logits equal HF's. `**kwargs` go to `CLIPModel.from_pretrained` (never ``trust_remote_code``).

        Raises:
            FileNotFoundError: a path that does not exist or has no config.json.
            ValueError: trust_remote_code asked for, or a checkpoint that is not a CLIP model.
        """
        from vlblocks.models.hf_clip import load_hf_clip

        parts = load_hf_clip(name_or_path, **kwargs)
        model = cls(
            parts.image_encoder,
            parts.text_encoder,
            embed_dim=parts.embed_dim,
            image_projection=parts.image_projection,
            text_projection=parts.text_projection,
        )
        with torch.no_grad():
            model.log_logit_scale.copy_(parts.log_logit_scale)
        return model


def _default_projection(name: str, encoder: nn.Module, embed_dim: int) -> nn.Module:
    dim = getattr(encoder, "dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(
            f"{name} must have a positive int attribute `dim` (its token width) when no projection is given, "
            f"got {dim!r}"
        )
    return nn.Linear(dim, embed_dim, bias=False)


def _scalar(module: nn.Module, name: str, value: float, learnable: bool) -> None:
    init = torch.tensor(value, dtype=torch.float32)
    if learnable:
        module.register_parameter(name, nn.Parameter(init))
    else:
        module.register_buffer(name, init)


def _as_encoder_output(name: str, out: object) -> EncoderOutput:
    if not isinstance(out, EncoderOutput):
        raise TypeError(f"{name} must return an EncoderOutput, got {type(out).__name__}")
    return out
