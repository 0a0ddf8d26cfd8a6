"""Atomic, pickle-free training checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a folder::

    model.safetensors          model.state_dict() (tied / shared weights stored once, like safetensors.save_model)
    optimizer.safetensors      optimizer state tensors, flattened keys "state.<param_index>.<name>"
    rng.safetensors            torch CPU (and CUDA) RNG states, uint8 tensors
    extra.safetensors          tensors found inside the scheduler state or the user ``state`` (only when any)
    trainer_state.json         user ``state`` (step, epoch, best metric ...), optimizer param_groups, scheduler
                               state_dict, python / numpy RNG states, written last

It is written crash-safely (``vlblocks._files.write_folder``): into a temporary sibling folder, every file and the
folder fsynced, then renamed into place; a previous complete checkpoint waits under its backup name ``.<name>.old``
until the new one is in place. After a crash at any step, ``has_checkpoint`` is true and ``load_checkpoint`` reads the
last complete checkpoint (the new one or the previous one, never a mixture); no save removes it before the new one
is complete. ``load_checkpoint`` checks everything (files, keys, shapes, requested states) before it changes anything.
Nothing is ever pickled: non-tensor values must be JSON-able (dict, list, tuple, str, int, float, bool, None);
tuples and dicts with non-str keys are tagged so they come back with their type.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file, save_model
from torch import nn

from vlblocks import _files
from vlblocks.training import _load_checks

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


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _write_checkpoint(tmp: Path, model, optimizer, scheduler, state) -> None:
    """Write every file of a checkpoint into the (empty) folder ``tmp``, trainer_state.json last."""
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION}
    extra: dict[str, torch.Tensor] = {}
    meta["state"] = _encode(dict(state or {}), "state", extra)  # bad state fails before any file is written
    save_model(_unwrap(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
    files = [MODEL_FILE]
    if optimizer is not None:
        opt_tensors: dict[str, torch.Tensor] = {}
        meta["optimizer"] = _encode(optimizer.state_dict(), "", opt_tensors)
        save_file(opt_tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": "pt"})
        files.append(OPTIMIZER_FILE)
    if scheduler is not None:
        meta["scheduler"] = _encode(scheduler.state_dict(), "scheduler", extra)
    rng_json, rng_tensors = _rng_state()
    meta["rng"] = rng_json
    save_file(rng_tensors, str(tmp / RNG_FILE))
    files.append(RNG_FILE)
    if extra:
        save_file(extra, str(tmp / EXTRA_FILE))
        files.append(EXTRA_FILE)
    meta["files"] = files
    _files.write_json(meta, tmp / STATE_FILE)


def _check_complete(folder: Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """(trainer_state.json content, {file: safetensors header}) of a complete checkpoint; raises otherwise."""
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
    meta = _files.read_json(meta_path)
    files = meta.get("files") if isinstance(meta, dict) else None
    allowed = set(CHECKPOINT_FILES) - {STATE_FILE}
    if not isinstance(files, list) or not {MODEL_FILE, RNG_FILE} <= set(files) or not set(files) <= allowed:
        raise ValueError(f"{meta_path} is not a vlblocks trainer state: its 'files' entry is {files!r}")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this vlblocks reads <= {FORMAT_VERSION}"
        )
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"incomplete checkpoint {str(folder)!r}: missing files {missing}")
    return meta, {name: _files.read_safetensors_header(folder / name) for name in files}


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """True when ``load_checkpoint(folder, ...)`` finds a complete checkpoint (the resume check of a recipe).

    Also true after a crash at any step of a ``save_checkpoint`` over an existing checkpoint: the last complete one
    is then read from its backup (``.<name>.old``) until the next save completes.
    """
    folder = _files.check_path("folder", folder)
    return _files.find_complete(folder, _check_complete) is not None


def read_checkpoint_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``state`` dict of the checkpoint ``load_checkpoint`` would load, without loading anything else.

    For decisions taken before the model / optimizer are built (e.g. which training stage a resumed run is in).

    Raises:
        FileNotFoundError / ValueError: as ``load_checkpoint`` (no complete checkpoint, a malformed file).
    """
    folder = _files.resolve_complete(_files.check_path("folder", folder), _check_complete)
    meta, _ = _check_complete(folder)
    return _decode_or_raise(meta.get("state", {}), _read(folder, meta, EXTRA_FILE, "cpu"), folder, "state")


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Crash-safely write a checkpoint folder (replacing a previous one only once the new one is complete).

    Call it on the main process only under DDP (``if dist_info.is_main: save_checkpoint(...)``).

    Args:
        folder: the checkpoint folder (created; its parent too). An existing folder may hold only checkpoint files.
        model: the model (DDP / compile wrappers are unwrapped); tied weights are stored once.
        optimizer: optional optimizer.
        scheduler: optional LR scheduler (anything with ``state_dict`` / ``load_state_dict``).
        state: optional JSON-able dict (tensors allowed), e.g. ``{"step": 100, "epoch": 2, "best": 0.61}``.

    Returns:
        The checkpoint folder.
    """
    folder = _files.check_path("folder", folder)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "state_dict", None)):
        raise TypeError(f"scheduler must have a state_dict() method, got {type(scheduler).__name__}")
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state must be a dict or None, got {type(state).__name__}")

    def write(tmp: Path) -> None:
        _write_checkpoint(tmp, model, optimizer, scheduler, state)

    return _files.write_folder(folder, write, owned=CHECKPOINT_FILES, check=_check_complete)


def _read(folder: Path, meta: dict, name: str, device: str) -> dict[str, torch.Tensor]:
    return _files.load_safetensors(folder / name, device) if name in meta["files"] else {}


def _decode_or_raise(obj: Any, tensors: dict[str, torch.Tensor], path: Path, what: str) -> Any:
    try:
        return _decode(obj, tensors)
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"checkpoint {str(path)!r} has a malformed {what} ({e})") from None


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

    Everything is checked first (files complete, requested optimizer / scheduler state present, keys and shapes
    fit); only then is anything loaded, so on an error the model, optimizer, scheduler and RNGs are unchanged.
    After a crash during a save, the last complete checkpoint is read (see ``has_checkpoint``).

    Args:
        folder: the checkpoint folder.
        model: the model to load into (same architecture; tied weights are re-tied by the model itself).
        optimizer: optional optimizer built over the same parameters, in the same order.
        scheduler: optional scheduler of the same kind.
        map_location: device the tensors are read to before being copied in.
        restore_rng: also restore the python / numpy / torch (CPU and CUDA) global RNG states.
        strict: the model's keys must match the file's exactly (shapes must always match).

    Returns:
        The ``state`` dict given to ``save_checkpoint`` (``{}`` when none was given).

    Raises:
        FileNotFoundError: no complete checkpoint (missing folder, missing trainer_state.json or listed file).
        ValueError: a malformed or truncated file (named), a requested optimizer / scheduler state that was not
            saved, or a checkpoint that does not fit the model / optimizer / scheduler.
    """
    folder = _files.check_path("folder", folder)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    try:
        device = str(torch.device(map_location))
    except (RuntimeError, TypeError):
        raise ValueError(f"map_location must name a torch device, got {map_location!r}") from None
    folder = _files.resolve_complete(folder, _check_complete)
    meta, headers = _check_complete(folder)
    target = _unwrap(model)
    _load_checks.check_model(target, headers[MODEL_FILE], strict, folder)
    extra = _read(folder, meta, EXTRA_FILE, device)
    opt_state = sched_state = rng = None
    if optimizer is not None:
        if "optimizer" not in meta or OPTIMIZER_FILE not in meta["files"]:
            raise ValueError(
                f"checkpoint {str(folder)!r} has no optimizer state (it was saved without optimizer)"
            )
        opt_tensors = _read(folder, meta, OPTIMIZER_FILE, device)
        opt_state = _decode_or_raise(meta["optimizer"], opt_tensors, folder, "optimizer state")
        _load_checks.check_optimizer(optimizer, opt_state, folder)
    if scheduler is not None:
        if "scheduler" not in meta:
            raise ValueError(
                f"checkpoint {str(folder)!r} has no scheduler state (it was saved without scheduler)"
            )
        sched_state = _decode_or_raise(meta["scheduler"], extra, folder, "scheduler state")
        _load_checks.check_scheduler(scheduler, sched_state, folder)
    state = _decode_or_raise(meta.get("state", {}), extra, folder, "state")
    if restore_rng:
        rng = _read(folder, meta, RNG_FILE, "cpu")
        _load_checks.check_rng(meta.get("rng"), rng, folder)
    weights = _read(folder, meta, MODEL_FILE, device)
    # everything is checked: load
    target.load_state_dict(weights, strict=False)
    if optimizer is not None:
        optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        scheduler.load_state_dict(sched_state)
    if restore_rng:
        _set_rng_state(meta["rng"], rng)
    return state
