"""Captioner: image encoder -> projector -> GPT-2 decoder (cross-attention or visual prefix) -> captions.

The encoder-decoder captioner of "Show and Tell" (Vinyals et al. 2015) with a ViT encoder (Dosovitskiy et al. 2021)
and a GPT-2 decoder (Radford et al. 2019), as HF's `VisionEncoderDecoderModel` (ViT-GPT-2) builds it; or, with a
prefix-mode decoder, LLaVA's layout (Liu et al. 2023). The model is a thin assembly of built submodules:
`from_pretrained` reads an HF ViT-GPT-2 folder into an `ImageEncoder`, its `enc_to_dec_proj` (or an identity) and a
`GPT2Decoder`, and gives the same greedy and beam captions as HF's `generate` on it.

Shapes: B batch, C channels, H, W image size, Ni image tokens, Di encoder width, D decoder width, T text tokens,
V vocabulary.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from vlblocks.decoders.gpt2 import DecoderOutput, GPT2Decoder
from vlblocks.generation.search import GenerationOutput

__all__ = ["Captioner"]


class Captioner(nn.Module):
    """Caption images with a GPT-2 decoder conditioned on image tokens.

    Args:
        image_encoder: module, pixel_values (B, C, H, W) -> `EncoderOutput` with tokens (B, Ni, Di)
            (e.g. `ImageEncoder`).
        decoder: a `GPT2Decoder` (cross mode with cross-attention, or prefix mode).
        projector: module (B, Ni, Di) -> (B, Ni, decoder.config.image_width); default identity.
        tokenizer: an HF tokenizer used by `generate` to turn tokens into text (optional).
        start_token_id: the first decoder token (default: the decoder's bos_token_id).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        decoder: GPT2Decoder,
        *,
        projector: nn.Module | None = None,
        tokenizer: Any = None,
        start_token_id: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(image_encoder, nn.Module):
            raise TypeError(f"image_encoder must be an nn.Module, got {type(image_encoder).__name__}")
        if not isinstance(decoder, GPT2Decoder):
            raise TypeError(f"decoder must be a GPT2Decoder, got {type(decoder).__name__}")
        if not decoder.has_image_input:
            raise ValueError("decoder must read image tokens: cross_attention=True or mode='prefix'")
        self.image_encoder, self.decoder = image_encoder, decoder
        self.projector = projector if projector is not None else nn.Identity()
        self.tokenizer = tokenizer
        self.start_token_id = decoder.config.bos_token_id if start_token_id is None else start_token_id

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> image tokens for the decoder (B, Ni, image_width)."""
        return self.projector(self.image_encoder(pixel_values).tokens)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Teacher forcing: input_ids (B, T) start with the start token; labels (B, T) as in `GPT2Decoder.forward`.

        Returns DecoderOutput(logits (B, T, V), loss or None).
        """
        return self.decoder(input_ids, self.encode(pixel_values), attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate_ids(self, pixel_values: torch.Tensor, **generation_kwargs: Any) -> GenerationOutput:
        """Token ids: `GenerationOutput` of `vlblocks.generation.generate` (prompt = the start token)."""
        image = self.encode(pixel_values)
        if "input_ids" not in generation_kwargs:
            if self.start_token_id is None:
                raise ValueError("start_token_id is None: pass input_ids or set the decoder's bos_token_id")
            generation_kwargs["input_ids"] = torch.full(
                (image.shape[0], 1), self.start_token_id, dtype=torch.long, device=image.device
            )
        return self.decoder.generate(image, **generation_kwargs)

    def generate(self, pixel_values: torch.Tensor, **generation_kwargs: Any) -> list[str]:
        """Captions of (B, C, H, W) normalised images; kwargs as `vlblocks.generation.generate`."""
        if self.tokenizer is None:
            raise ValueError("generate needs a tokenizer to turn tokens into text; use generate_ids for token ids")
        out = self.generate_ids(pixel_values, **generation_kwargs)
        new = out.sequences[:, 1 if "input_ids" not in generation_kwargs else generation_kwargs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, tokenizer: Any = None) -> Captioner:
        """Load an HF `VisionEncoderDecoderModel` (ViT encoder + GPT-2 decoder) folder or hub name.

        The encoder becomes an `ImageEncoder` over the HF vision model, `enc_to_dec_proj` the projector (identity
        when the checkpoint has none), `decoder.*` a `GPT2Decoder`; the tokenizer is read from the folder when it has
        one. Raises ValueError when the checkpoint is not a vision-encoder-decoder with a GPT-2 decoder.
        """
        import transformers

        from vlblocks.decoders.loading import resolve_checkpoint
        from vlblocks.encoders.image import ImageEncoder, _hf_default_config

        folder = resolve_checkpoint(name_or_path)
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "vision-encoder-decoder":
            raise ValueError(
                f"name_or_path must be a VisionEncoderDecoderModel checkpoint, got model_type {config.get('model_type')!r}"
            )
        decoder = GPT2Decoder.from_pretrained(folder)
        # the encoder through transformers' own loader (it maps its checkpoint key layout); safetensors only
        hf = transformers.VisionEncoderDecoderModel.from_pretrained(folder, use_safetensors=True)
        encoder = ImageEncoder(hf.encoder.eval(), image_config=_hf_default_config(hf.config.encoder))
        projector: nn.Module = nn.Identity()
        if getattr(hf, "enc_to_dec_proj", None) is not None:
            projector = hf.enc_to_dec_proj
        del hf
        if tokenizer is None and any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        start = config.get("decoder_start_token_id", config["decoder"].get("decoder_start_token_id"))
        return cls(encoder, decoder, projector=projector, tokenizer=tokenizer, start_token_id=start)
