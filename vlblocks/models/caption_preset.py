"""Captioning presets: a `Captioner` (image encoder + projector + GPT-2 decoder) and its PEFT set-up from a small,
JSON-able description, so a caption run folder can rebuild it.

``CaptionPreset`` lists what the captioning recipe's flags choose: the image encoder (a tiny random ViT / CNN or a
timm / HF name), the decoder (a tiny GPT-2 over a word-level vocabulary, or an HF GPT-2 name / folder), how the
image enters (``mode``: cross-attention as ViT-GPT-2 / "Show and Tell", Vinyals et al. 2015, or a visual prefix as
LLaVA, Liu et al. 2023) and the fine-tuning method (``peft``): ``full``; ``lora`` (Hu et al. 2021) on the
decoder's ``c_attn`` / ``c_proj`` / ``c_fc``; ``adapter`` (Houlsby et al. 2019), bottleneck adapters after each
self-attention and cross-attention; ``prompt`` (Lester et al. 2021), a soft prompt before the text. In the three
PEFT modes the decoder's language model is frozen; the image side (encoder unless ``freeze_image_encoder``,
projector) and the new image-reading modules (cross-attention with its LayerNorm, or the prefix projection) train.

Shapes: B batch, Ni image tokens, Di image width, D decoder width, T text tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from vlblocks._checks import (
    check_choice,
    check_dropout,
    check_nonneg_int,
    check_positive_int,
    check_positive_number,
)

__all__ = [
    "MODES",
    "PEFT_METHODS",
    "STEMS",
    "CaptionPreset",
    "apply_caption_peft",
    "build_captioner",
    "caption_decoder_config",
    "image_side_names",
]

PEFT_METHODS = ("full", "lora", "adapter", "prompt")
MODES = ("cross", "prefix")
STEMS = ("patch", "conv")
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")
# decoder modules that read the image: new in a pretrained LM, trained in every PEFT mode
IMAGE_READERS = ("crossattention", "ln_cross_attn", "visual_proj", "visual_norm")


@dataclass
class CaptionPreset:
    """Everything that decides a captioner's architecture and what trains (not its vocabulary).

    ``image_encoder``: "tiny-vit" / "tiny-cnn" (random init) or a timm / HF name or folder (``pretrained``: load
    its weights). ``stem`` (tiny-vit only): "patch", the ViT's linear patchify layer, or "conv", a convolutional
    stem (`vlblocks.encoders.conv_stem.ConvStem`, Xiao et al. 2021), with which the from-scratch ViT learns shapes
    faster; a saved preset without the key is a patchify ViT. ``decoder``: "tiny-gpt2" (random init, ``dim`` / ``depth`` / ``heads``, pretrained as a language
    model by the recipe) or an HF GPT-2 name / folder. ``max_length``: text tokens including BOS and EOS.
    """

    image_encoder: str = "tiny-vit"
    pretrained: bool = False
    image_size: int = 64
    patch_size: int = 8
    image_dim: int = 128
    image_depth: int = 2
    stem: str = "patch"
    freeze_image_encoder: bool = False
    decoder: str = "tiny-gpt2"
    dim: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 48
    dropout: float = 0.0
    mode: str = "cross"
    peft: str = "lora"
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    adapter_bottleneck: int = 32
    prompt_tokens: int = 10

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "image_dim",
            "image_depth",
            "dim",
            "depth",
            "heads",
            "max_length",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("lora_r", "adapter_bottleneck", "prompt_tokens"):
            check_nonneg_int(name, getattr(self, name))
        check_positive_number("lora_alpha", self.lora_alpha)
        check_dropout("dropout", self.dropout)
        check_dropout("lora_dropout", self.lora_dropout)
        check_choice("mode", self.mode, MODES)
        check_choice("stem", self.stem, STEMS)
        check_choice("peft", self.peft, PEFT_METHODS)
        needs = {"lora": "lora_r", "adapter": "adapter_bottleneck", "prompt": "prompt_tokens"}.get(self.peft)
        if needs and getattr(self, needs) < 1:
            raise ValueError(f"{needs} must be >= 1 with peft={self.peft!r}, got {getattr(self, needs)}")

    @property
    def tiny_decoder(self) -> bool:
        return self.decoder == "tiny-gpt2"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CaptionPreset:
        """The preset from a dict that may hold other keys too (e.g. a recipe's whole argument namespace)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def caption_decoder_config(preset: CaptionPreset, tokenizer: Any, *, image: bool = True) -> Any:
    """The `GPT2DecoderConfig` of the tiny decoder over `tokenizer`'s vocabulary (``image=False``: the text-only
    language model that is pretrained first; same parameter names, so its weights load into the captioner)."""
    from vlblocks.decoders import GPT2DecoderConfig

    p = preset
    prefix = p.image_size // p.patch_size * (p.image_size // p.patch_size) + 1 + p.prompt_tokens
    return GPT2DecoderConfig(
        vocab_size=len(tokenizer),
        n_positions=p.max_length + prefix,  # room for a visual prefix and a soft prompt, in both modes
        n_embd=p.dim,
        n_layer=p.depth,
        n_head=p.heads,
        resid_pdrop=p.dropout,
        embd_pdrop=p.dropout,
        attn_pdrop=p.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        cross_attention=image and p.mode == "cross",
        mode=p.mode if image else "cross",
    )


def build_captioner(preset: CaptionPreset, *, tokenizer: Any, lm_state: dict | None = None) -> nn.Module:
    """A `Captioner` for `preset`, without PEFT layers (see `apply_caption_peft`).

    Args:
        preset: the architecture.
        tokenizer: a transformers tokenizer with bos / eos / pad tokens (the word-level one for "tiny-gpt2").
        lm_state: the pretrained language model's state dict (tiny decoder); its weights are loaded, the
            image-reading modules keep their identity-preserving init (zero cross-attention output).
    """
    from vlblocks.decoders import GPT2Decoder
    from vlblocks.encoders import ImageEncoder
    from vlblocks.models.captioner import Captioner

    p = preset
    if p.image_encoder == "tiny-vit" and p.stem == "conv":  # same tokens as patchify: (S / p)^2 + CLS
        from vlblocks.encoders.conv_stem import conv_stem_vit

        image = conv_stem_vit(
            image_size=p.image_size, patch_size=p.patch_size, dim=p.image_dim, depth=p.image_depth, heads=p.heads
        )
    elif p.image_encoder.startswith("tiny-"):
        image = ImageEncoder.tiny(
            p.image_encoder[5:],
            image_size=p.image_size,
            dim=p.image_dim,
            depth=p.image_depth,
            heads=p.heads,
            patch_size=p.patch_size,
        )
    else:
        image = ImageEncoder.from_pretrained(
            p.image_encoder, pretrained=p.pretrained, image_size=p.image_size
        )
    if p.tiny_decoder:
        decoder = GPT2Decoder(caption_decoder_config(p, tokenizer))
        if lm_state is not None:
            load_language_model(decoder, lm_state)
    else:
        decoder = GPT2Decoder.from_pretrained(
            p.decoder,
            cross_attention=p.mode == "cross",
            mode=p.mode,
            resid_pdrop=p.dropout,
            embd_pdrop=p.dropout,
            attn_pdrop=p.dropout,
        )
    projector = nn.Linear(image.out_dim, decoder.config.image_width)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else decoder.config.bos_token_id
    return Captioner(image, decoder, projector=projector, tokenizer=tokenizer, start_token_id=start)


def load_language_model(decoder: nn.Module, lm_state: dict) -> None:
    """Load a text-only GPT-2 state dict into a decoder that also reads images; the image-reading modules keep
    their init, so the captioner starts as the language model (cross mode: exactly)."""
    state = dict(lm_state)
    for a, b in (("transformer.wte.weight", "lm_head.weight"), ("lm_head.weight", "transformer.wte.weight")):
        if a not in state and b in state:  # tied weights are stored once (safetensors' save_model)
            state[a] = state[b]
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    bad = [k for k in missing if not any(part in k for part in IMAGE_READERS)]
    if bad or unexpected:
        raise ValueError(f"lm_state does not fit the decoder: missing {bad[:5]}, unexpected {unexpected[:5]}")
    decoder.zero_init_cross_attention()
    decoder.reset_prefix_scale()


def image_side_names(preset: CaptionPreset) -> list[str]:
    """Module-name patterns that train besides the PEFT parameters: the projector, the decoder's image-reading
    modules and (unless frozen) the image encoder."""
    return ["projector", *IMAGE_READERS, *([] if preset.freeze_image_encoder else ["image_encoder"])]


def apply_caption_peft(model: nn.Module, preset: CaptionPreset) -> list[str]:
    """Set up ``preset.peft`` on a `Captioner` in place and choose what trains; returns the names of the layers
    that got LoRA / an adapter (["decoder.soft_prompt"] for a soft prompt, [] for full fine-tuning)."""
    from vlblocks.peft import SoftPrompt, apply_adapters, apply_lora, mark_only_peft_trainable

    p, decoder = preset, model.decoder
    if p.peft == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        if p.freeze_image_encoder:
            model.image_encoder.requires_grad_(False)
        return []
    if p.peft == "lora":
        targets = [rf"transformer\.h\.\d+\.(attn|mlp)\.{t}" for t in LORA_TARGETS]
        names = apply_lora(decoder, targets, r=p.lora_r, alpha=p.lora_alpha, dropout=p.lora_dropout)
    elif p.peft == "adapter":
        targets = [r"transformer\.h\.\d+\.attn\.c_proj", r"transformer\.h\.\d+\.crossattention\.c_proj"]
        names = apply_adapters(decoder, targets, bottleneck=p.adapter_bottleneck)
    else:
        vocab = (
            decoder.config.vocab_size
        )  # init: embeddings of P vocabulary tokens (Lester et al.'s "sampled vocab")
        ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[: p.prompt_tokens] % vocab
        decoder.soft_prompt = SoftPrompt.from_token_ids(decoder.transformer.wte, ids)
        names = ["soft_prompt"]
    mark_only_peft_trainable(model, extra=image_side_names(p))
    return [f"decoder.{n}" for n in names]
