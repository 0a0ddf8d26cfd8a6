"""ShapesWorld: seeded, offline synthetic scenes of coloured shapes with masks, captions and VQA questions.

One module per concern: ``objects`` (vocabulary, geometry), ``render`` (layout, pixels), ``captions``,
``questions``, ``world`` (``ShapesWorld``: per-concern random streams, lazy generation), ``tasks`` (read-only
task views) and ``export`` (VQA v2 / COCO captions layout).
"""

from __future__ import annotations

from vlblocks.data.shapes.captions import CAPTION_TEMPLATES, full_caption
from vlblocks.data.shapes.export import COCO_SPLITS, ShapesExport
from vlblocks.data.shapes.objects import COLORS, SHAPES, SIZES, ShapeObject
from vlblocks.data.shapes.questions import QUESTION_TYPES
from vlblocks.data.shapes.tasks import (
    ShapesCaptions,
    ShapesClassification,
    ShapesRetrieval,
    ShapesSegmentation,
    ShapesVQA,
    mask_class_names,
)
from vlblocks.data.shapes.world import MASK_CLASSES, Scene, ShapesWorld

__all__ = [
    "CAPTION_TEMPLATES",
    "COCO_SPLITS",
    "COLORS",
    "MASK_CLASSES",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "ShapesCaptions",
    "ShapesClassification",
    "ShapesExport",
    "ShapesRetrieval",
    "ShapesSegmentation",
    "ShapesVQA",
    "ShapesWorld",
    "full_caption",
    "mask_class_names",
]
