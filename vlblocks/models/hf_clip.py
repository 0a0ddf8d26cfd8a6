"""Loading an HF `CLIPModel` (Radford et al. 2021) into vlblocks parts, for `DualEncoder.from_pretrained`.

The vision tower becomes an `ImageEncoder` and the text tower a `TextEncoder` (whose summary token is CLIP's pooled
end-of-text token); CLIP's vision post-LayerNorm, applied to the [CLS] token only, moves out of the tower into the
image projection (``LayerNorm -> Linear``), so the tower has no unused parameter and the embeddings equal
`CLIPModel.get_image_features` / `get_text_features`. Never runs remote code.

Shapes: D tower width, E embedding width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlblocks.encoders.image import ImageEncoder, _hf_image_config
from vlblocks.encoders.loading import resolve_local
from vlblocks.encoders.text import TextEncoder

__all__ = ["HFClipParts", "load_hf_clip"]


@dataclass
class HFClipParts:
    """The pieces of a CLIP checkpoint: towers, projections (D -> E), E, and the log logit scale (0-d)."""

    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    image_projection: nn.Module
    text_projection: nn.Module
    embed_dim: int
    log_logit_scale: torch.Tensor


def load_hf_clip(name_or_path: str | os.PathLike, **kwargs: Any) -> HFClipParts:
    """Load an HF CLIP checkpoint (hub id or folder) as `HFClipParts`; `**kwargs` go to `CLIPModel.from_pretrained`."""
    from transformers import AutoConfig, AutoTokenizer, CLIPModel, PreTrainedModel

    name, _ = resolve_local(name_or_path, kwargs)
    config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    if getattr(config, "model_type", None) != "clip":
        raise ValueError(
            f"name_or_path must be a CLIP checkpoint (model_type 'clip'), got model_type "
            f"{getattr(config, 'model_type', None)!r} for {name!r}"
        )
    clip = CLIPModel.from_pretrained(name, trust_remote_code=False, **kwargs)
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        clip = clip.float()  # half-precision checkpoints train in float32 unless a dtype is asked for
    vision, text = clip.vision_model, clip.text_model
    if not isinstance(vision, PreTrainedModel):  # transformers 4: the towers are bare transformers
        vision, text = _as_pretrained(vision, "vision"), _as_pretrained(text, "text")
    holder = vision if hasattr(vision, "post_layernorm") else vision.vision_model
    post_layernorm = holder.post_layernorm
    holder.post_layernorm = nn.Identity()  # it only feeds the pooled [CLS]: it now heads the image projection
    image_encoder = ImageEncoder(vision, image_config=_hf_image_config(name, vision.config))
    text_encoder = TextEncoder(text, AutoTokenizer.from_pretrained(name, trust_remote_code=False))
    return HFClipParts(
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        image_projection=nn.Sequential(post_layernorm, clip.visual_projection),
        text_projection=clip.text_projection,
        embed_dim=int(clip.config.projection_dim),
        log_logit_scale=clip.logit_scale.detach().clone(),
    )


def _as_pretrained(tower: nn.Module, part: str) -> nn.Module:
    """Wrap a bare CLIP tower (transformers 4) in its PreTrainedModel class without building a second copy."""
    from transformers import CLIPTextModel, CLIPVisionModel

    model_cls = CLIPVisionModel if part == "vision" else CLIPTextModel
    with torch.device("meta"):
        shell = model_cls(tower.config)
    setattr(shell, f"{part}_model", tower)
    return shell
