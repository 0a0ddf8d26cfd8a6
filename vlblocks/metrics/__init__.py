"""Evaluation metrics: VQA accuracy (official evaluator), classification report (scikit-learn compatible),
image-text retrieval Recall@K,
segmentation mIoU / accuracies (mmsegmentation definitions).

Imported as a namespace: ``from vlblocks import metrics; metrics.vqa_accuracy(...)``.
"""

from __future__ import annotations

from vlblocks.metrics.classification import ClassificationReport, classification_report
from vlblocks.metrics.retrieval import RetrievalResult, RetrievalScores, retrieval_recall
from vlblocks.metrics.segmentation import SegmentationMetrics, SegmentationResult
from vlblocks.metrics.vqa import (
    normalize_vqa_answer,
    vqa_accuracy,
    vqa_accuracy_by_type,
    vqa_accuracy_per_question,
    vqa_question_accuracy,
)

__all__ = [
    "ClassificationReport",
    "RetrievalResult",
    "RetrievalScores",
    "SegmentationMetrics",
    "SegmentationResult",
    "classification_report",
    "normalize_vqa_answer",
    "retrieval_recall",
    "vqa_accuracy",
    "vqa_accuracy_by_type",
    "vqa_accuracy_per_question",
    "vqa_question_accuracy",
]
