"""Whole models assembled from vlblocks blocks."""

from __future__ import annotations

from vlblocks.models.captioner import Captioner
from vlblocks.models.vqa import VQAModel

__all__ = ["Captioner", "VQAModel"]
