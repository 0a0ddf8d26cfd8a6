"""Training utilities: seeding, atomic safetensors checkpoints and resume, torchrun / DDP helpers, metric logging.

Imported as a namespace: ``from vlblocks import training; info = training.setup_distributed()``.
"""

from __future__ import annotations

from vlblocks.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from vlblocks.training.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    gather_lists,
    get_rank,
    get_world_size,
    is_main_process,
    print0,
    setup_distributed,
)
from vlblocks.training.logging import MetricLogger, format_table, read_jsonl
from vlblocks.training.seed import seed_everything

__all__ = [
    "DistInfo",
    "MetricLogger",
    "all_reduce_mean",
    "barrier",
    "cleanup_distributed",
    "format_table",
    "gather_lists",
    "get_rank",
    "get_world_size",
    "has_checkpoint",
    "is_main_process",
    "load_checkpoint",
    "print0",
    "read_checkpoint_state",
    "read_jsonl",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
]
