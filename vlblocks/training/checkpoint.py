"""Atomic, pickle-free training checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a folder::

    model.safetensors          model.state_dict() (tied / shared weights stored once, like safetensors.save_model)
    optimizer.safetensors      optimizer state tensors, flattened keys "state.<param_index>.<name>"
    rng.safetensors            torch CPU (and CUDA) RNG states, uint8 tensors
    extra.safetensors          tensors found inside the scheduler state or the user ``state`` (only when any)
    trainer_state.json         user ``state`` (step, epoch, best metric ...), optimizer param_groups, scheduler
                               state_dict, python / numpy RNG states, written last

It is written into a temporary sibling folder (``.<name>.tmp-*``), every file and the folder are fsynced, and
only then does it replace the previous checkpoint (the old folder is renamed aside, the new one renamed in, the
old one deleted). A crash while writing leaves the previous checkpoint untouched; after a crash between the two renames
``load_checkpoint`` reads the kept-aside folder and the next ``save_checkpoint`` renames it back first.
Nothing is ever pickled: non-tensor values must be JSON-able (dict, list, tuple, str, int, float, bool, None);
tuples and dicts with non-str keys are tagged so they come back with their type.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

__all__ = [
    "CHECKPOINT_FILES",
    "has_checkpoint",
    "load_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
EXTRA_FILE = "extra.safetensors"
STATE_FILE = "trainer_state.json"
CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, EXTRA_FILE, STATE_FILE)

_TENSOR, _NDARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"


# ---------------------------------------------------------------- JSON <-> tensors


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by references; collect them in ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        if path in tensors:
            raise ValueError(f"two values share the flattened key {path!r}; rename one of them")
        is_np = isinstance(obj, np.ndarray)
        tensors[path] = (
            (torch.from_numpy(np.ascontiguousarray(obj)) if is_np else obj.detach()).contiguous().cpu()
        )
        return {_NDARRAY if is_np else _TENSOR: path}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    prefix = f"{path}." if path else ""
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{prefix}{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not ({_TENSOR, _NDARRAY, _TUPLE, _ITEMS} & set(obj)):
            return {k: _encode(v, f"{prefix}{k}", tensors) for k, v in obj.items()}
        for k in obj:
            if not (k is None or isinstance(k, bool | int | float | str)):
                raise TypeError(
                    f"checkpoint dict keys must be str/int/float/bool/None, got {k!r} at {path!r}"
                )
        return {_ITEMS: [[k, _encode(v, f"{prefix}{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(
        f"cannot store {type(obj).__name__} at {path or '<root>'!r} in a checkpoint: "
        "only tensors, numpy arrays and JSON values (dict, list, tuple, str, int, float, bool, None) are allowed"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``_encode``."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key in (_TENSOR, _NDARRAY):
            if value not in tensors:
                raise ValueError(
                    f"incomplete checkpoint: tensor {value!r} is missing from its safetensors file"
                )
            return tensors[value].numpy() if key == _NDARRAY else tensors[value]
        if key == _TUPLE:
            return tuple(_decode(v, tensors) for v in value)
        if key == _ITEMS:
            return {k: _decode(v, tensors) for k, v in value}
    return {k: _decode(v, tensors) for k, v in obj.items()}


# ---------------------------------------------------------------- RNG states


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON-able python / numpy states, tensor states) of every global generator."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    json_state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    return json_state, tensors


def _set_rng_state(json_state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = json_state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json_state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------- files


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(obj: Any, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _backup_of(folder: Path) -> Path | None:
    """The newest previous checkpoint kept aside by an interrupted replacement of ``folder``, if any."""
    if not folder.parent.is_dir():
        return None
    backups = sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime)
    return backups[-1] if backups else None


def _recover(folder: Path) -> None:
    """Before a save: finish an interrupted replacement and drop stale temporary folders of ``folder``."""
    parent = folder.parent
    backup = None if folder.exists() else _backup_of(folder)
    if backup is not None:
        os.rename(backup, folder)
    for stale in parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():
        for old in parent.glob(f".{folder.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)


def _write_checkpoint(tmp: Path, model, optimizer, scheduler, state) -> None:
    """Write every file of a checkpoint into the (empty) folder ``tmp``, trainer_state.json last."""
    save_model(_unwrap(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
    files = [MODEL_FILE]
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION}
    extra: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        opt_tensors: dict[str, torch.Tensor] = {}
        meta["optimizer"] = _encode(optimizer.state_dict(), "", opt_tensors)
        save_file(opt_tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": "pt"})
        files.append(OPTIMIZER_FILE)
    if scheduler is not None:
        meta["scheduler"] = _encode(scheduler.state_dict(), "scheduler", extra)
    meta["state"] = _encode(dict(state or {}), "state", extra)
    rng_json, rng_tensors = _rng_state()
    meta["rng"] = rng_json
    save_file(rng_tensors, str(tmp / RNG_FILE))
    files.append(RNG_FILE)
    if extra:
        save_file(extra, str(tmp / EXTRA_FILE))
        files.append(EXTRA_FILE)
    meta["files"] = files
    for name in files:
        _fsync_file(tmp / name)
    _write_json(meta, tmp / STATE_FILE)
    _fsync_dir(tmp)


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint folder (replacing a previous one only once the new one is complete).

    Call it on the main process only under DDP (``if dist_info.is_main: save_checkpoint(...)``).

    Args:
        folder: the checkpoint folder (created; its parent too).
        model: the model (DDP / compile wrappers are unwrapped); tied weights are stored once.
        optimizer: optional optimizer.
        scheduler: optional LR scheduler (anything with ``state_dict`` / ``load_state_dict``).
        state: optional JSON-able dict (tensors allowed), e.g. ``{"step": 100, "epoch": 2, "best": 0.61}``.

    Returns:
        The checkpoint folder.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state must be a dict or None, got {type(state).__name__}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder must be a directory path, got an existing file {str(folder)!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _recover(folder)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder.parent / f".{folder.name}.tmp-{token}"
    tmp.mkdir()
    try:
        _write_checkpoint(tmp, model, optimizer, scheduler, state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.parent / f".{folder.name}.old-{token}"
    if folder.exists():
        os.rename(folder, old)  # keep the previous checkpoint until the new one is in place
    os.rename(tmp, folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"checkpoint path {str(folder)!r} is not a folder")
    meta_path = folder / STATE_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"incomplete checkpoint {str(folder)!r}: {STATE_FILE} is missing (not written by save_checkpoint, "
            "or the write was interrupted)"
        )
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    missing = [name for name in meta.get("files", []) if not (folder / name).is_file()]
    if missing or "files" not in meta:
        raise FileNotFoundError(
            f"incomplete checkpoint {str(folder)!r}: missing files {missing or [STATE_FILE]}"
        )
    return meta


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` into the given objects.

    Args:
        folder: the checkpoint folder.
        model: the model to load into (same architecture; tied weights are re-tied by the model itself).
        optimizer: optional optimizer built over the same parameters, in the same order.
        scheduler: optional scheduler of the same kind.
        map_location: device the tensors are read to before being copied in.
        restore_rng: also restore the python / numpy / torch (CPU and CUDA) global RNG states.
        strict: the model's keys must match the file's exactly.

    Returns:
        The ``state`` dict given to ``save_checkpoint`` (``{}`` when none was given).
    """
    folder = Path(folder)
    if not folder.exists() and _backup_of(folder) is not None:
        folder = _backup_of(folder)  # a save was interrupted between its two renames: read the kept-aside one
    meta = _read_meta(folder)
    device = str(map_location)
    load_model(_unwrap(model), str(folder / MODEL_FILE), strict=strict, device=device)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(
                f"checkpoint {str(folder)!r} has no optimizer state (it was saved without optimizer)"
            )
        opt_state = _decode(meta["optimizer"], load_file(str(folder / OPTIMIZER_FILE), device=device))
        optimizer.load_state_dict(opt_state)
    extra = load_file(str(folder / EXTRA_FILE), device=device) if EXTRA_FILE in meta["files"] else {}
    if scheduler is not None:
        if "scheduler" not in meta:
            raise ValueError(
                f"checkpoint {str(folder)!r} has no scheduler state (it was saved without scheduler)"
            )
        scheduler.load_state_dict(_decode(meta["scheduler"], extra))
    if restore_rng:
        _set_rng_state(meta["rng"], load_file(str(folder / RNG_FILE)))
    return _decode(meta.get("state", {}), extra)


def read_checkpoint_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``state`` dict of a checkpoint (step, epoch, ...) without loading its model or optimizer tensors."""
    folder = Path(folder)
    if not folder.exists() and _backup_of(folder) is not None:
        folder = _backup_of(folder)
    meta = _read_meta(folder)
    extra = load_file(str(folder / EXTRA_FILE)) if EXTRA_FILE in meta["files"] else {}
    return _decode(meta.get("state", {}), extra)


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """True when ``load_checkpoint(folder)`` finds a complete checkpoint (also a kept-aside one after a crash)."""
    try:
        read_checkpoint_state(folder)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError):
        return False
    return True
