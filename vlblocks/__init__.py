"""vlblocks: readable, tested vision-language building blocks for PyTorch.

The stable API is re-exported here; `vlblocks.data`, `vlblocks.metrics` and `vlblocks.training` are namespaces
(`from vlblocks.metrics import vqa_accuracy`). See docs/index.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from vlblocks import data, metrics, training
from vlblocks.encoders import EncoderOutput, ImageConfig, ImageEncoder, TextEncoder
from vlblocks.fusion import CoAttentionFusion, CoAttentionLayer, ConcatFusion, FusionOutput
from vlblocks.heads import MLPHead
from vlblocks.layers import Attention, KVCache, Mlp
from vlblocks.models import VQAModel
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
    "CoAttentionFusion",
    "CoAttentionLayer",
    "ConcatFusion",
    "EncoderOutput",
    "FusionOutput",
    "ImageConfig",
    "ImageEncoder",
    "KVCache",
    "LoRAConv1D",
    "LoRAConv2d",
    "LoRAEmbedding",
    "LoRALinear",
    "MLPHead",
    "Mlp",
    "SoftPrompt",
    "TextEncoder",
    "VQAModel",
    "__version__",
    "apply_adapters",
    "apply_lora",
    "count_parameters",
    "data",
    "load_adapter",
    "mark_only_peft_trainable",
    "merge_lora",
    "metrics",
    "peft_state_dict",
    "remove_adapters",
    "remove_lora",
    "save_adapter",
    "training",
    "unmerge_lora",
]
