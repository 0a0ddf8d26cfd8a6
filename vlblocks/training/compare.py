"""Comparing variants of one recipe: each trained in turn on the same data, seed and budget, one table of results.

A recipe's ``--compare`` (``caption_train.py``'s PEFT table: full fine-tuning, LoRA r=8 / 16, adapters, a soft
prompt) trains one configuration per variant, each a `TrainingRun` in its own subfolder of the output folder
(``<output-dir>/<variant>/``, replaced on every call), and prints and saves one row per variant: the method, the
final metrics the recipe names, the trainable parameters (count and share) and the training seconds per epoch, wall
and CPU. Folders named in ``share`` (a cache such as the pretrained language model in ``lm/``) are made by the first
variant and linked into the next ones, so it is computed once. Like `TrainingRun`, it never calls the model: the
recipe's ``train(run)`` does the work and returns the final evaluation and the parameter count.

    rows = compare_variants(args, dist, [("full", {"peft": "full"}), ("LoRA r=8", {"peft": "lora", "lora_r": 8})],
                            train, task="caption", metrics=("CIDEr-D", "BLEU-4"), share=("lm",))
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlblocks.training.distributed import DistInfo
from vlblocks.training.logging import format_table
from vlblocks.training.run import prepare_run_dir, say
from vlblocks.training.session import TrainingRun
from vlblocks.utils import ParameterCount

__all__ = ["compare_variants", "variant_dir", "variant_row"]

# history columns (the recipe's own timing of an epoch's training steps) -> table column of their per-epoch mean
EPOCH_TIMES = {"s/epoch": "train_s", "CPU s/epoch": "train_cpu_s"}


def variant_dir(name: str) -> str:
    """The subfolder of a variant: ``"LoRA r=8"`` -> ``"LoRA_r8"``, ``"soft prompt"`` -> ``"soft_prompt"``."""
    return name.replace(" ", "_").replace("=", "")


def variant_row(
    name: str,
    history: Sequence[Mapping[str, Any]],
    final: Mapping[str, Any],
    count: ParameterCount,
    *,
    metrics: Sequence[str],
) -> dict[str, Any]:
    """One row of the table: ``method``, the `metrics` of `final`, ``trainable`` and ``trainable %`` (of all the
    model's parameters), and the per-epoch mean of each timing column of `history` (``EPOCH_TIMES``) it holds."""
    if not history:
        raise ValueError(f"history of {name!r} must hold at least one epoch row, got none")
    missing = [m for m in metrics if m not in final]
    if missing:
        raise KeyError(f"final of {name!r} has no metric {missing}; it has {sorted(final)}")
    row = {"method": name, **{m: final[m] for m in metrics}}
    row |= {"trainable": count.trainable, "trainable %": 100 * count.trainable / count.total}
    for column, key in EPOCH_TIMES.items():
        if all(key in h for h in history):
            row[column] = sum(h[key] for h in history) / len(history)
    return row


def compare_variants(
    args: argparse.Namespace,
    dist: DistInfo,
    variants: Sequence[tuple[str, Mapping[str, Any]]],
    train: Callable[[TrainingRun], tuple[Mapping[str, Any], ParameterCount]],
    *,
    task: str,
    metrics: Sequence[str],
    share: Sequence[str] = (),
    title: str = "PEFT comparison",
    label: str = "",
) -> int:
    """Train every variant in turn into ``args.output_dir / variant_dir(name)`` and tabulate them.

    Args:
        args: the recipe's flags; each variant runs with ``{**vars(args), **changes}`` and its own ``output_dir``.
        dist: the processes (torchrun's group is kept between variants: ``TrainingRun(cleanup=False)``).
        variants: ``(name, changes)`` pairs, e.g. ``("LoRA r=8", {"peft": "lora", "lora_r": 8})``.
        train: trains one `TrainingRun` and returns ``(final evaluation, parameter count)``.
        task: the runs' task (``run_config.json``).
        metrics: the keys of the final evaluation that become columns.
        share: folder names made by one variant and linked into the others (and into the output folder).
        title, label: ``=== name (label) ===`` before each variant, ``title, label:`` above the table.

    Returns:
        0 with ``compare.json`` (the rows) in the output folder; a variant's exit code (1 when it has none) as soon
        as one fails or stops early, without the table.
    """
    base = prepare_run_dir(args.output_dir, resume=True, main=dist.is_main)
    suffix, rows = f" ({label})" if label else "", []
    for name, changes in variants:
        run_args = argparse.Namespace(**{**vars(args), **changes, "output_dir": base / variant_dir(name)})
        out = prepare_run_dir(run_args.output_dir, overwrite=True, main=dist.is_main)
        _link_shared(base, out, share, main=dist.is_main)
        say(f"\n=== {name}{suffix} ===", enabled=dist.is_main)
        with TrainingRun(run_args, dist, out, task=task, cleanup=False) as run:
            final, count = train(run)
        if run.code or run.step < run.total:
            say(f"--compare stopped during {name}; the finished rows are not written", enabled=dist.is_main)
            return run.code or 1
        _link_shared(out, base, share, main=dist.is_main)
        rows.append(variant_row(name, run.history, final, count, metrics=metrics))
    say(f"\n{title}{', ' + label if label else ''}:\n{format_table(rows)}", enabled=dist.is_main)
    if dist.is_main:
        (base / "compare.json").write_text(json.dumps(rows, indent=2))
    return 0


def _link_shared(source: Path, target: Path, share: Sequence[str], *, main: bool) -> None:
    """Link each shared folder of `source` into `target` where `target` has none yet (main process only)."""
    for name in share:
        if main and (source / name).is_dir() and not (target / name).exists():
            (target / name).symlink_to((source / name).resolve(), target_is_directory=True)
