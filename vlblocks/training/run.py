"""Run folders and the command-line flags every recipe shares.

A run folder (``runs/<task>/``) describes itself: ``run_config.json`` holds the task and the arguments that built
the model, so ``--resume``, ``--eval-only`` and ``--ask`` need nothing but the folder, and
``vlblocks.models.load_run(folder)`` rebuilds the trained model in a user's own code. Next to it: ``metrics.jsonl``,
``checkpoint/`` (safetensors + JSON), ``summary.json`` and PNG pictures.

A new run never destroys an old one: ``prepare_run_dir`` refuses a folder that holds a run unless ``--resume``
(continue it) or ``--overwrite`` (replace it) is given.

``add_run_args`` adds the shared flags, each validated at parse time (``--batch-size 0`` and ``--lr -1e-3`` are
usage errors naming the flag), with their defaults shown by ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = [
    "RUN_CONFIG",
    "RUN_CONTROL",
    "RunFolderError",
    "add_run_args",
    "fraction",
    "is_run_dir",
    "load_run_config",
    "make_parser",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "prepare_run_dir",
    "progress",
    "restore_run_args",
    "save_run_config",
    "say",
]

RUN_CONFIG = "run_config.json"
# the flags of add_run_args that say how to run, not what to build: a resumed / loaded run keeps these from the
# command line (restore_run_args' `keep`; a recipe adds its own, e.g. "ask")
RUN_CONTROL = (
    "output_dir",
    "resume",
    "overwrite",
    "eval_only",
    "stop_after",
    "threads",
    "device",
    "save_every",
)
# files whose presence means "a run lives here"
_RUN_MARKERS = (RUN_CONFIG, "metrics.jsonl", "checkpoint", "summary.json")


class RunFolderError(RuntimeError):
    """The output folder holds a run that this invocation would overwrite."""


# ----------------------------------------------------------------------------- argparse types


def _number_type(kind: type, test: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = expected  # argparse names the type in its messages
    return parse


positive_int = _number_type(int, lambda v: v > 0, "a positive int")
nonneg_int = _number_type(int, lambda v: v >= 0, "an int >= 0")
positive_float = _number_type(float, lambda v: v > 0 and v != float("inf"), "a positive number")
nonneg_float = _number_type(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and shows every default."""


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the script's docstring, that shows defaults, and that reads ``--lr -1e-3``
    as a (refused) value rather than as an unknown option."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=_Formatter)
    # argparse treats "-1e-3" as an option unless it looks like a negative number; teach it exponents
    parser._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.?\d+(?:[eE][-+]?\d+)?$")
    return parser


def add_run_args(
    parser: argparse.ArgumentParser,
    *,
    task: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup: float = 0.05,
    seed: int = 0,
) -> argparse._ArgumentGroup:
    """Add the flags every recipe shares, with this recipe's defaults. Output goes to ``runs/<task>``."""
    g = parser.add_argument_group("run")
    g.add_argument("--output-dir", type=Path, default=Path("runs") / task, help="the run folder")
    g.add_argument("--seed", type=int, default=seed)
    g.add_argument("--epochs", type=positive_int, default=epochs)
    g.add_argument(
        "--max-steps", type=nonneg_int, default=0, help="stop after this many steps (0: epochs decide)"
    )
    g.add_argument("--batch-size", type=positive_int, default=batch_size, help="per process")
    g.add_argument("--lr", type=positive_float, default=lr, help="peak learning rate")
    g.add_argument("--weight-decay", type=nonneg_float, default=weight_decay, help="AdamW, matrices only")
    g.add_argument("--warmup", type=fraction, default=warmup, help="warm-up fraction of the steps")
    g.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --output-dir")
    g.add_argument("--eval-only", action="store_true", help="evaluate the saved run, rewrite its report")
    g.add_argument(
        "--stop-after",
        type=nonneg_int,
        default=0,
        help="checkpoint and stop after N steps of this invocation",
    )
    g.add_argument(
        "--save-every", type=nonneg_int, default=0, help="also checkpoint every N steps (0: epochs)"
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (0: torch's default)")
    return g


# ----------------------------------------------------------------------------- run folder


def is_run_dir(folder: str | os.PathLike) -> bool:
    """True when `folder` holds (part of) a run: a config, metrics, a checkpoint or a summary."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / m).exists() for m in _RUN_MARKERS) or _has_kept_aside(folder)


def _has_kept_aside(folder: Path) -> bool:
    """A checkpoint save interrupted between its renames leaves `.checkpoint.old-*` beside the missing folder."""
    return folder.is_dir() and any(p.name.startswith(".checkpoint.") for p in folder.iterdir())


def prepare_run_dir(
    folder: str | os.PathLike, *, resume: bool = False, overwrite: bool = False, main: bool = True
) -> Path:
    """Create the run folder, or check that this invocation may use the one there.

    A folder that already holds a run is refused (``RunFolderError`` naming ``--resume`` and ``--overwrite``)
    unless `resume` (its files are kept and continued) or `overwrite` (its run files are deleted first, on the
    main process only). ``resume`` on a folder without a run starts a fresh run there.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    if is_run_dir(folder) and not resume:
        if not overwrite:
            raise RunFolderError(
                f"{folder} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                "or --output-dir to write elsewhere"
            )
        if main:
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"run config value must be JSON-able, got {type(value).__name__}: {value!r}")


def save_run_config(folder: str | os.PathLike, *, task: str, args: Any, **extra: Any) -> Path:
    """Write ``run_config.json``: ``{"task", "args": vars(args), **extra}`` (atomic replace)."""
    from vlblocks import __version__

    folder = Path(folder)
    payload = {"task": task, "vlblocks": __version__, "args": _jsonable(dict(vars(args))), **_jsonable(extra)}
    path = folder / RUN_CONFIG
    tmp = folder / f".{RUN_CONFIG}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_run_config(folder: str | os.PathLike, *, task: str | None = None) -> dict[str, Any]:
    """Read ``run_config.json`` of a run folder (checking its task when given)."""
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a run folder (train into it first)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "task" not in config or "args" not in config:
        raise ValueError(f"{path} must hold an object with 'task' and 'args', got {str(config)[:100]}")
    if task is not None and config["task"] != task:
        raise ValueError(f"{folder} holds a {config['task']!r} run, expected a {task!r} run")
    return config


def restore_run_args(
    args: argparse.Namespace,
    *,
    keep: Iterable[str],
    error: Callable[[str], Any] | None = None,
) -> argparse.Namespace:
    """`args` with every value saved in the run folder ``args.output_dir`` except the names in `keep` (the flags
    that steer this invocation: output folder, resume, eval-only, threads ...), so a saved run needs no flag
    repeated. With ``--resume`` and no run there yet, `args` come back unchanged (a fresh run starts); with
    ``--eval-only`` / ``--ask`` a missing run is an error (``error(message)``, e.g. ``parser.error``)."""
    folder = Path(args.output_dir)
    if not (folder / RUN_CONFIG).is_file():
        if getattr(args, "eval_only", False) or getattr(args, "ask", None):
            message = f"--output-dir {folder} holds no run to load (no {RUN_CONFIG}); train into it first"
            if error is None:
                raise FileNotFoundError(message)
            error(message)
        return args
    saved = load_run_config(folder)["args"]
    keep = set(keep)
    restored = argparse.Namespace(**vars(args))
    for name, value in saved.items():
        if name in keep:
            continue
        current = getattr(args, name, None)
        setattr(restored, name, Path(value) if isinstance(current, Path) and value is not None else value)
    return restored


# ----------------------------------------------------------------------------- console


def progress(iterable: Iterable, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on an interactive terminal; no bar (and no log noise) when stderr is not a TTY or not `enabled`."""
    show = enabled and sys.stderr.isatty()
    return tqdm(iterable, disable=not show, dynamic_ncols=True, **kwargs)


def say(*parts: Any, enabled: bool = True) -> None:
    """Print a message without breaking an active progress bar (``tqdm.write``); no-op when not `enabled`."""
    if enabled:
        tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)
        sys.stdout.flush()
