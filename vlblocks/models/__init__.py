"""Whole models assembled from vlblocks blocks, their preset builders, and loading a trained run folder."""

from __future__ import annotations

from vlblocks.models.dual_encoder import DualEncoder, DualEncoderOutput
from vlblocks.models.presets import VQAPreset, apply_vqa_lora, build_vqa_model
from vlblocks.models.retrieval_preset import GridPool, RetrievalPreset, build_dual_encoder
from vlblocks.models.run import LoadedRun, load_run
from vlblocks.models.vqa import VQAModel
from vlblocks.models.zero_shot import ZeroShotClassifier, ZeroShotResult

__all__ = [
    "DualEncoder",
    "DualEncoderOutput",
    "GridPool",
    "LoadedRun",
    "RetrievalPreset",
    "VQAModel",
    "VQAPreset",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "apply_vqa_lora",
    "build_dual_encoder",
    "build_vqa_model",
    "load_run",
]
