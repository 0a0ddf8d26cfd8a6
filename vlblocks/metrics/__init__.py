"""Evaluation metrics: VQA accuracy (official evaluator), classification report (scikit-learn compatible),
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
from vlblocks.metrics.vqa import (
    normalize_vqa_answer,
    vqa_accuracy,
    vqa_accuracy_by_type,
    vqa_question_accuracy,
)

__all__ = [
    "BleuResult",
    "CaptionScores",
    "ScoreResult",
    "bleu",
    "caption_scores",
    "cider_d",
    "rouge_l",
    "ptb_tokenize",
    "ptb_tokenize_batch",
    "ClassificationReport",
    "ClipScoreResult",
    "clip_model_score",
    "clip_score",
    "encoder_clip_score",
    "ref_clip_score",
    "classification_report",
    "normalize_vqa_answer",
    "vqa_accuracy",
    "vqa_accuracy_by_type",
    "vqa_question_accuracy",
]
