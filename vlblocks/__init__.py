"""vlblocks: readable, tested vision-language building blocks for PyTorch.

The stable API is re-exported here; `vlblocks.data`, `vlblocks.metrics` and `vlblocks.training` are namespaces
(`from vlblocks.metrics import vqa_accuracy`). See docs/index.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from vlblocks import data, metrics, training
from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.encoders import EncoderOutput, ImageConfig, ImageEncoder, TextEncoder
from vlblocks.fusion import CoAttentionFusion, CoAttentionLayer, ConcatFusion, FusionOutput
from vlblocks.generation import GenerationOutput, sample_next_token
from vlblocks.heads import ConvSegHead, LinearSegHead, MaskTransformerSegHead, MLPHead
from vlblocks.hooks import (
    attention_grid,
    attention_rollout,
    cls_attention_map,
    overlay_heatmap,
    position_embedding_similarity,
    record_attention,
)
from vlblocks.layers import Attention, KVCache, Mlp
from vlblocks.losses import ContrastiveLoss, SigLIPLoss, contrastive_loss, siglip_loss
from vlblocks.models import Captioner, DualEncoder, SegmentationModel, VQAModel, ZeroShotClassifier, load_run
from vlblocks.peft import (
    BottleneckAdapter,
    LoRAConv1D,
    LoRAConv2d,
    LoRAEmbedding,
    LoRALinear,
    SoftPrompt,
    apply_adapters,
    apply_lora,
    count_parameters,
    load_adapter,
    mark_only_peft_trainable,
    merge_lora,
    peft_state_dict,
    remove_adapters,
    remove_lora,
    save_adapter,
    unmerge_lora,
)

__all__ = [
    "Attention",
    "BottleneckAdapter",
    "Captioner",
    "CoAttentionFusion",
    "CoAttentionLayer",
    "ConcatFusion",
    "ContrastiveLoss",
    "ConvSegHead",
    "DualEncoder",
    "EncoderOutput",
    "FusionOutput",
    "GPT2Decoder",
    "GPT2DecoderConfig",
    "GenerationOutput",
    "ImageConfig",
    "ImageEncoder",
    "KVCache",
    "LinearSegHead",
    "LoRAConv1D",
    "LoRAConv2d",
    "LoRAEmbedding",
    "LoRALinear",
    "MLPHead",
    "MaskTransformerSegHead",
    "Mlp",
    "SegmentationModel",
    "SigLIPLoss",
    "SoftPrompt",
    "TextEncoder",
    "VQAModel",
    "ZeroShotClassifier",
    "__version__",
    "apply_adapters",
    "apply_lora",
    "attention_grid",
    "attention_rollout",
    "cls_attention_map",
    "contrastive_loss",
    "count_parameters",
    "data",
    "load_adapter",
    "load_run",
    "mark_only_peft_trainable",
    "merge_lora",
    "metrics",
    "overlay_heatmap",
    "peft_state_dict",
    "position_embedding_similarity",
    "record_attention",
    "remove_adapters",
    "remove_lora",
    "sample_next_token",
    "save_adapter",
    "siglip_loss",
    "training",
    "unmerge_lora",
]
