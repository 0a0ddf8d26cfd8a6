"""Looking inside models: record attention of vlblocks / timm / HF layers, rollout, CLS maps, overlays and grids."""

from __future__ import annotations

from vlblocks.hooks.attention import AttentionRecording, attention_layers, record_attention
from vlblocks.hooks.maps import (
    attention_rollout,
    caption_attention_maps,
    cls_attention_map,
    position_embedding_similarity,
)
from vlblocks.hooks.visualize import COLORMAPS, apply_colormap, attention_grid, overlay_heatmap

__all__ = [
    "COLORMAPS",
    "AttentionRecording",
    "apply_colormap",
    "attention_grid",
    "attention_layers",
    "attention_rollout",
    "caption_attention_maps",
    "cls_attention_map",
    "overlay_heatmap",
    "position_embedding_similarity",
    "record_attention",
]
