"""Datasets and data utilities: ShapesWorld (offline synthetic scenes with task views), VQA v2 and COCO captions
readers, an image + mask folder reader for segmentation, the image loader they share, a word-level tokenizer and
the VQA collate function.

Imported as a namespace: ``from vlblocks import data; world = data.ShapesWorld("train")``.
"""

from __future__ import annotations

from vlblocks.data.augment import random_flips
from vlblocks.data.caption_batch import CaptionTokens, caption_tokens, prompt_tokens
from vlblocks.data.coco import CocoCaptions
from vlblocks.data.collate import VQACollator, to_pixel_values
from vlblocks.data.image_folder import load_image_folder
from vlblocks.data.image_io import UnreadableImageError, load_image
from vlblocks.data.seg_folder import load_segmentation_folder
from vlblocks.data.shapes import (
    COLORS,
    MASK_CLASSES,
    QUESTION_TYPES,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesCaptions,
    ShapesClassification,
    ShapesExport,
    ShapesRetrieval,
    ShapesSegmentation,
    ShapesVQA,
    ShapesWorld,
)
from vlblocks.data.tokenizer import SPECIAL_TOKENS, build_word_tokenizer
from vlblocks.data.vqa import AnswerVocab, VQAv2Dataset, vqa_soft_score

__all__ = [
    "COLORS",
    "MASK_CLASSES",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "SPECIAL_TOKENS",
    "AnswerVocab",
    "CaptionTokens",
    "CocoCaptions",
    "Scene",
    "ShapeObject",
    "ShapesCaptions",
    "ShapesClassification",
    "ShapesExport",
    "ShapesRetrieval",
    "ShapesSegmentation",
    "ShapesVQA",
    "ShapesWorld",
    "UnreadableImageError",
    "VQACollator",
    "VQAv2Dataset",
    "build_word_tokenizer",
    "caption_tokens",
    "load_image",
    "load_image_folder",
    "load_segmentation_folder",
    "prompt_tokens",
    "random_flips",
    "to_pixel_values",
    "vqa_soft_score",
]
