"""Whole models assembled from vlblocks blocks."""

from __future__ import annotations

from vlblocks.models.segmentation import PatchFeatures, SegmentationModel, last_layer_tokens, patch_grid
from vlblocks.models.vqa import VQAModel

__all__ = ["PatchFeatures", "SegmentationModel", "VQAModel", "last_layer_tokens", "patch_grid"]
