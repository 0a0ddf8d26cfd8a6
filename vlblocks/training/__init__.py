"""Training helpers: schedules, optimizer groups, run flags and folders, collective stop / NaN / empty-batch
decisions, reseeding, sharded batch order, atomic safetensors checkpoints and resume, torchrun / DDP, logging and the
prediction grid, the run a recipe trains in (``start_run``) and the table comparing variants of it
(``compare_variants``). Plain functions, small context managers and one run object that never calls the model: the
training loop itself stays in each recipe.

Imported as a namespace: ``from vlblocks import training; info = training.setup_distributed()``.
"""

from __future__ import annotations

from vlblocks.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from vlblocks.training.compare import compare_variants, variant_dir, variant_row
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
    wrap_ddp,
)
from vlblocks.training.grid import caption_grid, image_grid, to_pil
from vlblocks.training.logging import MetricLogger, format_table, read_jsonl, write_summary
from vlblocks.training.loop import (
    StepDecision,
    StopRequest,
    agree,
    chunk_groups,
    reseed,
    resume_position,
    shard_batches,
    stop_on_signal,
)
from vlblocks.training.masks import class_palette, mask_grid, mask_legend, overlay_mask
from vlblocks.training.optim import build_optimizer, param_groups, supports_fused_adamw
from vlblocks.training.plots import plot_panels
from vlblocks.training.run import (
    RUN_CONTROL,
    RunFolderError,
    add_run_args,
    fraction,
    is_run_dir,
    load_run_config,
    make_parser,
    nonneg_int,
    positive_float,
    positive_int,
    prepare_run_dir,
    progress,
    restore_run_args,
    save_run_config,
    say,
)
from vlblocks.training.schedule import build_scheduler, lr_factor, optimizer_for_run, warmup_steps_for
from vlblocks.training.seed import seed_everything
from vlblocks.training.session import TrainingRun, start_run, to_device, usage_error

__all__ = [
    "RUN_CONTROL",
    "DistInfo",
    "MetricLogger",
    "RunFolderError",
    "StepDecision",
    "StopRequest",
    "TrainingRun",
    "add_run_args",
    "agree",
    "all_reduce_mean",
    "barrier",
    "build_optimizer",
    "build_scheduler",
    "caption_grid",
    "chunk_groups",
    "class_palette",
    "cleanup_distributed",
    "compare_variants",
    "format_table",
    "fraction",
    "gather_lists",
    "get_rank",
    "get_world_size",
    "has_checkpoint",
    "image_grid",
    "is_main_process",
    "is_run_dir",
    "load_checkpoint",
    "load_run_config",
    "lr_factor",
    "make_parser",
    "mask_grid",
    "mask_legend",
    "nonneg_int",
    "optimizer_for_run",
    "overlay_mask",
    "param_groups",
    "plot_panels",
    "positive_float",
    "positive_int",
    "prepare_run_dir",
    "print0",
    "progress",
    "read_checkpoint_state",
    "read_jsonl",
    "restore_run_args",
    "reseed",
    "resume_position",
    "save_checkpoint",
    "save_run_config",
    "say",
    "seed_everything",
    "setup_distributed",
    "shard_batches",
    "start_run",
    "stop_on_signal",
    "supports_fused_adamw",
    "to_device",
    "to_pil",
    "usage_error",
    "variant_dir",
    "variant_row",
    "warmup_steps_for",
    "wrap_ddp",
    "write_summary",
]
