"""Parameter-efficient fine-tuning: LoRA (Hu et al. 2021), bottleneck adapters (Houlsby et al. 2019), soft prompts
(Lester et al. 2021); injection into timm / HF / vlblocks models, merging, and peft-compatible saving and loading.

Shapes: see the submodules (r rank, in / out layer widths, B batch, N tokens, D width).
"""

from __future__ import annotations

from vlblocks.peft.adapter import BottleneckAdapter, apply_adapters, remove_adapters
from vlblocks.peft.inject import (
    ParameterCount,
    apply_lora,
    count_parameters,
    lora_layers,
    mark_only_peft_trainable,
    merge_lora,
    peft_named_parameters,
    peft_state_dict,
    remove_lora,
    unmerge_lora,
)
from vlblocks.peft.io import load_adapter, save_adapter
from vlblocks.peft.lora import LoRAConv1D, LoRAConv2d, LoRADropout, LoRAEmbedding, LoRALayer, LoRALinear
from vlblocks.peft.match import matches, select_modules
from vlblocks.peft.prompt import SoftPrompt, SoftPromptOutput

__all__ = [
    "BottleneckAdapter",
    "LoRAConv1D",
    "LoRAConv2d",
    "LoRADropout",
    "LoRAEmbedding",
    "LoRALayer",
    "LoRALinear",
    "ParameterCount",
    "SoftPrompt",
    "SoftPromptOutput",
    "apply_adapters",
    "apply_lora",
    "count_parameters",
    "load_adapter",
    "lora_layers",
    "mark_only_peft_trainable",
    "matches",
    "merge_lora",
    "peft_named_parameters",
    "peft_state_dict",
    "remove_adapters",
    "remove_lora",
    "save_adapter",
    "select_modules",
    "unmerge_lora",
]
