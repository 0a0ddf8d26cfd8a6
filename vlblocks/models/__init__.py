"""Whole models assembled from vlblocks blocks."""

from __future__ import annotations

from vlblocks.models.dual_encoder import DualEncoder, DualEncoderOutput
from vlblocks.models.vqa import VQAModel
from vlblocks.models.zero_shot import ZeroShotClassifier, ZeroShotResult

__all__ = ["DualEncoder", "DualEncoderOutput", "VQAModel", "ZeroShotClassifier", "ZeroShotResult"]
