"""Preset builders: a whole model from a small, JSON-able description, so a run folder can rebuild it.

``VQAPreset`` lists what the VQA recipe's flags choose (encoders, fusion, widths, LoRA); ``build_vqa_model`` turns
it into a ``VQAModel``; ``apply_vqa_lora`` adds LoRA to the encoders and says, per encoder, how many modules got it.
A recipe saves ``asdict(preset)`` in its run folder and ``vlblocks.models.load_run`` calls the same builder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from vlblocks._checks import check_choice, check_nonneg_int, check_positive_int

__all__ = ["VQAPreset", "apply_vqa_lora", "build_vqa_model"]


@dataclass
class VQAPreset:
    """Everything that decides a VQAModel's architecture (not its answer count or tokenizer).

    Encoders: ``"tiny-cnn"`` / ``"tiny-vit"`` (random init, offline), ``"tiny-bert"`` / ``"tiny-roberta"``, or a
    timm / HF hub name or local folder. ``image_dim=0`` means "same as ``dim``". ``lora_r=0``: no LoRA.
    """

    image_encoder: str = "tiny-cnn"
    text_encoder: str = "tiny-bert"
    image_size: int = 64
    patch_size: int = 8
    image_dim: int = 0
    text_depth: int = 1
    max_length: int = 24
    fusion: str = "coattention"
    dim: int = 64
    heads: int = 4
    depth: int = 1
    mlp_ratio: float = 2.0
    self_attn: bool = False
    summary: str = "max"
    pool: str = "concat"
    encoder_skip: bool = True
    hidden_dim: int = 256
    dropout: float = 0.0
    lora_r: int = 0
    lora_alpha: float | None = None
    lora_targets: str = "query,value"

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "text_depth",
            "max_length",
            "dim",
            "heads",
            "depth",
            "hidden_dim",
        ):
            check_positive_int(name, getattr(self, name))
        check_nonneg_int("image_dim", self.image_dim)
        check_nonneg_int("lora_r", self.lora_r)
        check_choice("fusion", self.fusion, ("coattention", "concat"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VQAPreset:
        """The preset from a dict that may hold other keys too (e.g. a recipe's whole argument namespace)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_vqa_model(preset: VQAPreset, *, num_answers: int, tokenizer: Any = None) -> nn.Module:
    """A fresh (random-init head and fusion) ``VQAModel`` for `preset`.

    Args:
        preset: the architecture.
        num_answers: classifier classes C.
        tokenizer: a transformers tokenizer for the tiny text encoders (e.g. ``build_word_tokenizer``); hub text
            encoders bring their own.
    """
    from vlblocks.encoders import ImageEncoder, TextEncoder
    from vlblocks.fusion import CoAttentionFusion, ConcatFusion
    from vlblocks.heads import MLPHead
    from vlblocks.models.vqa import VQAModel

    check_positive_int("num_answers", num_answers)
    p = preset
    if p.image_encoder.startswith("tiny-"):
        image = ImageEncoder.tiny(
            p.image_encoder[5:], image_size=p.image_size, dim=p.image_dim or p.dim, patch_size=p.patch_size
        )
    else:
        image = ImageEncoder.from_pretrained(p.image_encoder, image_size=p.image_size)
    if p.text_encoder.startswith("tiny-"):
        if tokenizer is None:
            raise ValueError(f"tokenizer is required for text_encoder={p.text_encoder!r}, got None")
        text = TextEncoder.tiny(
            p.text_encoder[5:],
            tokenizer=tokenizer,
            dim=p.dim,
            depth=p.text_depth,
            max_positions=max(p.max_length, 32),
            dropout=p.dropout,
        )
    else:
        text = TextEncoder.from_pretrained(p.text_encoder)
    if p.fusion == "coattention":
        fusion: nn.Module = CoAttentionFusion(
            image.dim,
            text.dim,
            dim=p.dim,
            heads=p.heads,
            depth=p.depth,
            mlp_ratio=p.mlp_ratio,
            self_attn=p.self_attn,
            summary=p.summary,
            pool=p.pool,
            encoder_skip=p.encoder_skip,
            dropout=p.dropout,
        )
    else:
        fusion = ConcatFusion(image.dim, text.dim, dim=p.hidden_dim, dropout=p.dropout)
    head = MLPHead(fusion.out_dim, num_answers, hidden_dim=p.hidden_dim, dropout=p.dropout)
    return VQAModel(image, text, fusion, head)


def apply_vqa_lora(model: nn.Module, preset: VQAPreset) -> dict[str, int]:
    """LoRA (rank ``preset.lora_r``, alpha ``lora_alpha`` or 2 r) on every module of each encoder matching
    ``lora_targets``; returns ``{"image_encoder": n, "text_encoder": m}``, the modules wrapped per encoder (0 when
    none of an encoder's modules matches). Raises ``ValueError`` when neither encoder has a match."""
    from vlblocks.peft import apply_lora

    check_positive_int("lora_r", preset.lora_r)
    targets = [t.strip() for t in preset.lora_targets.split(",") if t.strip()]
    counts = {}
    for name in ("image_encoder", "text_encoder"):
        try:
            wrapped = apply_lora(
                getattr(model, name), targets, r=preset.lora_r, alpha=preset.lora_alpha or 2 * preset.lora_r
            )
        except ValueError:  # no module of this encoder matches (e.g. the tiny CNN has no "query")
            wrapped = []
        counts[name] = len(wrapped)
    if not any(counts.values()):
        raise ValueError(f"lora_targets {preset.lora_targets!r} match no module of either encoder")
    return counts
