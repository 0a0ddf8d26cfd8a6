"""Whole models assembled from vlblocks blocks, their preset builders, and loading a trained run folder."""

from __future__ import annotations

from vlblocks.models.caption_preset import CaptionPreset, apply_caption_peft, build_captioner
from vlblocks.models.captioner import Captioner
from vlblocks.models.dual_encoder import DualEncoder, DualEncoderOutput
from vlblocks.models.presets import VQAPreset, apply_vqa_lora, build_vqa_model
from vlblocks.models.retrieval_preset import GridPool, RetrievalPreset, build_dual_encoder
from vlblocks.models.run import LoadedRun, load_run
from vlblocks.models.segmentation import PatchFeatures, SegmentationModel, last_layer_tokens, patch_grid
from vlblocks.models.trained_view import TrainedView
from vlblocks.models.vqa import VQAModel
from vlblocks.models.vqa_ask import ask_vqa
from vlblocks.models.zero_shot import ZeroShotClassifier, ZeroShotResult

__all__ = [
    "CaptionPreset",
    "Captioner",
    "DualEncoder",
    "DualEncoderOutput",
    "GridPool",
    "LoadedRun",
    "PatchFeatures",
    "RetrievalPreset",
    "SegmentationModel",
    "TrainedView",
    "VQAModel",
    "VQAPreset",
    "ZeroShotClassifier",
    "ZeroShotResult",
    "apply_caption_peft",
    "apply_vqa_lora",
    "ask_vqa",
    "build_captioner",
    "build_dual_encoder",
    "build_vqa_model",
    "last_layer_tokens",
    "load_run",
    "patch_grid",
]
