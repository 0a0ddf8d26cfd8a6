"""Retrieval preset: a `DualEncoder` from a small, JSON-able description, so a run folder can rebuild it.

``RetrievalPreset`` lists what the retrieval recipe's flags choose (towers, widths, pooling, temperature, loss);
``build_dual_encoder`` turns it into a `DualEncoder` (CLIP, Radford et al. 2021; SigLIP, Zhai et al. 2023). Tiny
random-init towers train offline; ``clip`` names an HF `CLIPModel` (hub id or folder) whose towers, projections and
scale are loaded instead. ``pool="grid"`` summarises the image tokens by a linear map of their averages over a
``pool_cells x pool_cells`` grid (`GridPool`; the default 8 keeps every token of a 64 px tiny CNN, 3 pools to the
3 x 3 positions ShapesWorld's captions name) rather than their mean: a mean over positions forgets *where* things are, which captions such as "a red circle at the top left"
need, while the averaging shares the weights within a cell.

Shapes: B batch, N tokens (P prefix tokens, then a g x g grid), D tower width, E embedding width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlblocks._checks import check_choice, check_nonneg_int, check_positive_int, check_positive_number
from vlblocks.encoders.output import EncoderOutput

__all__ = ["GridPool", "RetrievalPreset", "build_dual_encoder"]


@dataclass
class RetrievalPreset:
    """Everything that decides a retrieval DualEncoder's architecture (not its tokenizer).

    Towers: ``"tiny-cnn"`` / ``"tiny-vit"`` and ``"tiny-gru"`` (`GRUTextEncoder`) / ``"tiny-bert"`` /
    ``"tiny-roberta"`` (random init, offline; ``text_depth`` layers), or
    an ``ImageEncoder`` / ``TextEncoder`` hub name or folder. ``clip``: an HF CLIPModel name or folder that replaces
    both towers (then the tower fields are unused). ``image_dim=0`` means "same as ``dim``". ``loss="siglip"``
    adds SigLIP's learnable logit bias.
    """

    image_encoder: str = "tiny-cnn"
    text_encoder: str = "tiny-gru"
    clip: str = ""
    image_size: int = 64
    patch_size: int = 8
    dim: int = 64
    image_dim: int = 0
    text_depth: int = 2
    heads: int = 2
    max_length: int = 64
    embed_dim: int = 64
    pool: str = "grid"
    pool_cells: int = 8
    loss: str = "clip"
    temperature: float = 0.07
    learnable_temperature: bool = True

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "dim",
            "text_depth",
            "heads",
            "max_length",
            "embed_dim",
            "pool_cells",
        ):
            check_positive_int(name, getattr(self, name))
        check_nonneg_int("image_dim", self.image_dim)
        check_choice("pool", self.pool, ("grid", "cls"))
        check_choice("loss", self.loss, ("clip", "siglip"))
        check_positive_number("temperature", self.temperature)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RetrievalPreset:
        """The preset from a dict that may hold other keys too (e.g. a recipe's whole argument namespace)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GridPool(nn.Module):
    """An image tower whose summary token keeps positions: a linear map of the token grid averaged over c x c cells.

    Args:
        encoder: an `ImageEncoder` (``dim``, ``num_prefix_tokens``, ``image_config``) with a fixed square token grid
            of `num_tokens` = g * g tokens after its prefix tokens.
        num_tokens: the grid's token count N - P.
        cells: c, the pooled grid's side (c <= g).

    forward(pixel_values (B, 3, H, W)) -> EncoderOutput whose ``cls`` (B, D) is ``Linear(c * c * D -> D)`` of the
    cell averages, and whose tokens are the encoder's grid tokens with that summary in slot 0.
    """

    def __init__(self, encoder: nn.Module, *, num_tokens: int, cells: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim = int(encoder.dim)
        self.num_tokens = check_positive_int("num_tokens", num_tokens)
        self.side = int(round(num_tokens**0.5))
        if self.side**2 != num_tokens:
            raise ValueError(f"num_tokens must be a square (a g x g grid), got {num_tokens}")
        self.cells = check_positive_int("cells", cells)
        if cells > self.side:
            raise ValueError(f"cells must be at most the grid side {self.side}, got {cells}")
        self.image_config = encoder.image_config
        self.pool = nn.Linear(cells * cells * self.dim, self.dim)

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        out = self.encoder(pixel_values)
        grid = out.tokens[:, self.encoder.num_prefix_tokens :]  # (B, N_grid, D)
        if grid.shape[1] != self.num_tokens:
            raise ValueError(
                f"pixel_values must give {self.num_tokens} grid tokens (image side "
                f"{self.image_config.size}), got {grid.shape[1]} from shape {tuple(pixel_values.shape)}"
            )
        maps = rearrange(grid, "b (h w) d -> b d h w", h=self.side)  # (B, D, g, g)
        cells = F.adaptive_avg_pool2d(maps, self.cells)  # (B, D, c, c)
        summary = self.pool(rearrange(cells, "b d h w -> b (h w d)"))  # (B, c * c * D) -> (B, D)
        tokens = torch.cat([summary[:, None], grid], dim=1)  # (B, 1 + N_grid, D)
        return EncoderOutput(tokens=tokens, mask=None, cls=summary)


def build_dual_encoder(preset: RetrievalPreset, *, tokenizer: Any = None) -> nn.Module:
    """A fresh `DualEncoder` for `preset` (random init for tiny towers; hub weights for ``clip`` / hub towers).

    Args:
        preset: the architecture.
        tokenizer: a transformers tokenizer for the tiny text encoders (e.g. ``build_word_tokenizer``); hub text
            encoders and ``clip`` bring their own.

    Raises:
        ValueError: a tiny text encoder without `tokenizer`.
    """
    from vlblocks.encoders import ImageEncoder, TextEncoder
    from vlblocks.encoders.recurrent import GRUTextEncoder
    from vlblocks.models.dual_encoder import DualEncoder

    p = preset
    bias = -10.0 if p.loss == "siglip" else None
    if p.clip:
        model = DualEncoder.from_pretrained(p.clip)
        if bias is not None:
            model.logit_bias = nn.Parameter(torch.tensor(bias))
        model.log_logit_scale.requires_grad_(p.learnable_temperature)
        return model
    if p.image_encoder.startswith("tiny-"):
        image: nn.Module = ImageEncoder.tiny(
            p.image_encoder[5:],
            image_size=p.image_size,
            dim=p.image_dim or p.dim,
            heads=p.heads,
            patch_size=p.patch_size,
        )
    else:
        image = ImageEncoder.from_pretrained(p.image_encoder, image_size=p.image_size)
    if p.pool == "grid":
        image = GridPool(
            image,
            num_tokens=(p.image_size // p.patch_size) ** 2,
            cells=min(p.pool_cells, p.image_size // p.patch_size),
        )
    if p.text_encoder.startswith("tiny-") and tokenizer is None:
        raise ValueError(f"tokenizer is required for text_encoder={p.text_encoder!r}, got None")
    if p.text_encoder == "tiny-gru":
        text: nn.Module = GRUTextEncoder(tokenizer, dim=p.dim, depth=p.text_depth)
    elif p.text_encoder.startswith("tiny-"):
        text = TextEncoder.tiny(
            p.text_encoder[5:],
            tokenizer=tokenizer,
            dim=p.dim,
            depth=p.text_depth,
            heads=p.heads,
            max_positions=max(p.max_length, 32),
        )
    else:
        text = TextEncoder.from_pretrained(p.text_encoder)
    return DualEncoder(
        image,
        text,
        embed_dim=p.embed_dim,
        temperature=p.temperature,
        learnable_temperature=p.learnable_temperature,
        logit_bias=bias,
    )
