"""Evaluation metrics: VQA accuracy (official evaluator), classification report (scikit-learn compatible),
image-text retrieval Recall@K, segmentation mIoU / accuracies (mmsegmentation definitions),
caption metrics (coco-caption BLEU / CIDEr-D / ROUGE-L and its PTB tokenizer, without Java), CLIPScore.

Imported as a namespace: ``from vlblocks import metrics; metrics.vqa_accuracy(...)``.
"""

from __future__ import annotations

from vlblocks.metrics.caption import (
    BleuResult,
    CaptionScores,
    ScoreResult,
    bleu,
    caption_scores,
    cider_d,
    rouge_l,
)
from vlblocks.metrics.classification import ClassificationReport, classification_report
from vlblocks.metrics.clipscore import (
    ClipScoreResult,
    clip_model_score,
    clip_score,
    encoder_clip_score,
    ref_clip_score,
)
from vlblocks.metrics.ptb import ptb_tokenize, ptb_tokenize_batch
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
    "BleuResult",
    "CaptionScores",
    "ClassificationReport",
    "ClipScoreResult",
    "RetrievalResult",
    "RetrievalScores",
    "ScoreResult",
    "SegmentationMetrics",
    "SegmentationResult",
    "bleu",
    "caption_scores",
    "cider_d",
    "classification_report",
    "clip_model_score",
    "clip_score",
    "encoder_clip_score",
    "normalize_vqa_answer",
    "ptb_tokenize",
    "ptb_tokenize_batch",
    "ref_clip_score",
    "retrieval_recall",
    "rouge_l",
    "vqa_accuracy",
    "vqa_accuracy_by_type",
    "vqa_accuracy_per_question",
    "vqa_question_accuracy",
]
