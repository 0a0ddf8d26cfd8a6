"""Saving and loading PEFT weights in peft's folder format: `adapter_model.safetensors` + `adapter_config.json`.

LoRA weights use peft's key layout (`base_model.model.<module>.lora_A.weight`, `...lora_B.weight`; embeddings
`...lora_embedding_A` / `...lora_embedding_B`) and a peft `LoraConfig` JSON, so `peft.PeftModel.from_pretrained`
loads a folder saved here and `load_adapter` loads a folder saved by peft's `save_pretrained`
(LoRA, Hu et al. 2021). Bottleneck adapters (Houlsby et al. 2019) and other PEFT modules (soft prompts) are saved
in the same file under their model path; the config then holds a list of entries, one per kind
(`"peft_type": "LORA"`, `"VLBLOCKS_ADAPTER"`, `"VLBLOCKS_MODULES"`), which only vlblocks reads. Folders are written
crash-safely (`vlblocks._files.write_folder`, like checkpoints); a failed `load_adapter` leaves the model as it was.

Shapes: r rank, in / out layer widths (see `vlblocks.peft.lora`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from vlblocks import _files
from vlblocks.layers.mlp import make_activation
from vlblocks.peft._config_checks import ACT_NAMES, ADAPTER_TYPE, MODULES_TYPE, check_entry, config_error
from vlblocks.peft.adapter import _CHILD, _HANDLE, BottleneckAdapter, apply_adapters
from vlblocks.peft.inject import _is_peft_module, _replace, _resolve, lora_layers, peft_named_parameters
from vlblocks.peft.lora import LoRAConv1D, LoRAEmbedding, lora_class_for

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_adapter", "save_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_ACT_NAMES = ACT_NAMES
# our LoRA parameter name -> peft's saved suffix, for embeddings and for every other layer
_PEFT_SUFFIX = {
    True: {"lora_A": "lora_embedding_A", "lora_B": "lora_embedding_B"},
    False: {"lora_A": "lora_A.weight", "lora_B": "lora_B.weight"},
}


def _exact(name: str) -> str:
    """A pattern that `vlblocks.peft.match.matches` matches against `name` only."""
    return f"(?:{re.escape(name)})"


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """peft's rank_pattern / alpha_pattern lookup: the first key matching a dotted suffix of `name`."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _lora_entry(model: nn.Module, base_model_name_or_path: str | None) -> tuple[dict[str, Any], dict]:
    layers = list(lora_layers(model))
    if len({layer.use_rslora for _, layer in layers}) > 1:
        raise ValueError("LoRA layers mix use_rslora=True and False; peft's config holds one value")
    r = Counter(layer.r for _, layer in layers).most_common(1)[0][0]
    alpha = Counter(layer.lora_alpha for _, layer in layers).most_common(1)[0][0]
    tensors = {}
    for name, layer in layers:
        suffix = _PEFT_SUFFIX[isinstance(layer, LoRAEmbedding)]
        tensors[f"{PREFIX}{name}.{suffix['lora_A']}"] = layer.lora_A
        tensors[f"{PREFIX}{name}.{suffix['lora_B']}"] = layer.lora_B
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": max(layer.lora_dropout_p for _, layer in layers),
        "target_modules": [name for name, _ in layers],
        "exclude_modules": None,
        "fan_in_fan_out": any(isinstance(layer, LoRAConv1D) for _, layer in layers),
        "bias": "none",
        "use_rslora": layers[0][1].use_rslora,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {re.escape(n): m.r for n, m in layers if m.r != r},
        "alpha_pattern": {re.escape(n): m.lora_alpha for n, m in layers if m.lora_alpha != alpha},
        "use_dora": False,
        "lora_bias": False,
    }
    return config, tensors


def _act_name(adapter: BottleneckAdapter, name: str) -> str:
    for act in _ACT_NAMES:
        candidate = make_activation(act)
        if type(candidate) is type(adapter.act) and repr(candidate) == repr(adapter.act):
            return act
    raise ValueError(
        f"cannot save adapter {name!r}: its activation {adapter.act!r} is not one of {_ACT_NAMES}"
    )


def _module_entries(model: nn.Module) -> tuple[list[dict[str, Any]], dict]:
    """Config entries and tensors of the outermost PEFT modules (adapters grouped by their settings)."""
    adapters: dict[tuple, list[str]] = {}
    others: dict[str, str] = {}
    tensors = {}
    inside: set[str] = set()
    for name, module in model.named_modules():
        if not _is_peft_module(module) or any(name.startswith(p + ".") for p in inside):
            continue
        inside.add(name)
        for pname, param in module.named_parameters():
            tensors[f"{PREFIX}{name}.{pname}"] = param
        parent, _, child = name.rpartition(".")
        if isinstance(module, BottleneckAdapter) and child == "adapter":
            key = (module.bottleneck, _act_name(module, name), float(module.drop.p))
            adapters.setdefault(key, []).append(parent)
        else:
            others[name] = type(module).__name__
    entries: list[dict[str, Any]] = [
        {"peft_type": ADAPTER_TYPE, "target_modules": targets, "bottleneck": b, "act": act, "dropout": p}
        for (b, act, p), targets in adapters.items()
    ]
    if others:
        entries.append({"peft_type": MODULES_TYPE, "modules": others})
    return entries, tensors


def save_adapter(
    model: nn.Module, folder: str | os.PathLike, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write the PEFT weights of `model` to `folder/adapter_model.safetensors` and its `adapter_config.json`.

    With only LoRA layers the folder is a peft LoRA adapter (`PeftModel.from_pretrained(base, folder)` loads it);
    adapters and soft prompts are saved too, as extra config entries that only `load_adapter` reads.
    The folder is written crash-safely like a checkpoint (`vlblocks.training.save_checkpoint`): into a temporary
    sibling, fsynced, then renamed into place; the previous adapter stays loadable until the new one is complete,
    and a later save removes what an interrupted one left behind.

    Args:
        model: a model with LoRA layers and / or PEFT modules (`is_peft_module = True`).
        folder: created if needed; an existing folder may hold only the two adapter files.
        base_model_name_or_path: recorded in the config (e.g. the hub name of the base model).

    Returns:
        The folder.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    folder = _files.check_path("folder", folder)
    if base_model_name_or_path is not None and not isinstance(base_model_name_or_path, str):
        raise TypeError(f"base_model_name_or_path must be a str or None, got {base_model_name_or_path!r}")
    entries, tensors = [], {}
    if any(True for _ in lora_layers(model)):
        entry, lora_tensors = _lora_entry(model, base_model_name_or_path)
        entries.append(entry)
        tensors.update(lora_tensors)
    module_entries, module_tensors = _module_entries(model)
    entries += module_entries
    tensors.update(module_tensors)
    if not entries:
        raise ValueError(f"{type(model).__name__} has no LoRA layers or PEFT modules to save")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    config = entries[0] if len(entries) == 1 else entries

    def write(tmp: Path) -> None:
        save_file(tensors, tmp / WEIGHTS_NAME, {"format": "pt"})
        _files.write_json(config, tmp / CONFIG_NAME, indent=2, sort_keys=True)

    return _files.write_folder(folder, write, owned=(CONFIG_NAME, WEIGHTS_NAME), check=_check_folder)


# ---------------------------------------------------------------- reading and checking a folder


def _check_folder(folder: Path) -> tuple[list[dict[str, Any]], dict[str, tuple[str, tuple[int, ...]]]]:
    """(config entries, {saved key: (dtype, shape)}) of a complete adapter folder; a clear error otherwise."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"adapter path {str(folder)!r} is not a folder")
    for file in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder / file} not found (expected peft's adapter folder layout)")
    config_path = folder / CONFIG_NAME
    config = _files.read_json(config_path)
    entries = config if isinstance(config, list) else [config]
    if not entries:
        raise config_error(config_path, None, "the config is an empty list")
    for i, entry in enumerate(entries):
        check_entry(entry, partial(config_error, config_path, i if isinstance(config, list) else None))
    return entries, _files.read_safetensors_header(folder / WEIGHTS_NAME)


# ---------------------------------------------------------------- loading (undone on any failure)

Undo = list[Callable[[], None]]


def _prepare_lora(model: nn.Module, entry: dict[str, Any], folder: Path, undo: Undo) -> None:
    """Check a peft LoRA config and, when `model` has no LoRA layer yet, apply LoRA as it says (undo recorded)."""
    for key, ok in (("use_dora", False), ("lora_bias", False), ("layers_to_transform", None)):
        if entry.get(key, ok) not in (ok, None):
            raise ValueError(f"adapter config has {key}={entry[key]!r}, which vlblocks does not support")
    for key in ("layers_pattern", "target_parameters", "modules_to_save"):
        if entry.get(key):
            raise ValueError(f"adapter config has {key}={entry[key]!r}, which vlblocks does not support")
    if entry.get("bias", "none") != "none":
        raise ValueError(f"adapter config has bias={entry['bias']!r}; only 'none' is supported")
    if any(True for _ in lora_layers(model)):
        return  # checked by _check_existing_lora once keys and shapes are known to fit
    targets = entry.get("target_modules")
    if not targets:
        raise ValueError(f"adapter config {folder / CONFIG_NAME} has no target_modules, got {targets!r}")
    names, _ = _resolve(model, targets, entry.get("exclude_modules"))
    modules = dict(model.named_modules())
    dropout, rslora = float(entry.get("lora_dropout", 0.0)), bool(entry.get("use_rslora", False))
    new_layers = []
    for name in names:  # every layer is built (and validated) before the model changes
        r = _pattern_value(entry.get("rank_pattern") or {}, name, entry["r"])
        alpha = _pattern_value(entry.get("alpha_pattern") or {}, name, entry.get("lora_alpha", 8))
        layer = lora_class_for(modules[name]).from_layer(
            modules[name], r=r, alpha=alpha, dropout=dropout, use_rslora=rslora
        )
        new_layers.append((modules[name], layer))
    for old, new in new_layers:
        _replace(model, old, new)
        undo.append(partial(_replace, model, new, old))


def _check_existing_lora(layers: list, entry: dict[str, Any], folder: Path) -> None:
    """The model's LoRA layers must have the rank, alpha and rsLoRA flag the config gives them (else outputs differ)."""
    rslora = bool(entry.get("use_rslora", False))
    for name, layer in layers:
        r = _pattern_value(entry.get("rank_pattern") or {}, name, entry["r"])
        alpha = _pattern_value(entry.get("alpha_pattern") or {}, name, entry.get("lora_alpha", 8))
        if (layer.r, float(layer.lora_alpha), layer.use_rslora) != (r, float(alpha), rslora):
            raise ValueError(
                f"LoRA layer {name!r} has r={layer.r}, alpha={layer.lora_alpha}, use_rslora={layer.use_rslora}; "
                f"{folder / CONFIG_NAME} says r={r}, alpha={alpha}, use_rslora={rslora}"
            )


def _detach_adapter(module: nn.Module) -> None:
    getattr(module, _HANDLE).remove()
    delattr(module, _HANDLE)
    del module._modules[_CHILD]


def _prepare_modules(model: nn.Module, entry: dict[str, Any], undo: Undo) -> None:
    modules = dict(model.named_modules())
    if entry["peft_type"] == ADAPTER_TYPE:
        for name in entry["target_modules"]:
            if name not in modules:
                raise ValueError(f"adapter target module {name!r} not found in {type(model).__name__}")
        todo = [
            n
            for n in entry["target_modules"]
            if not isinstance(getattr(modules[n], "adapter", None), nn.Module)
        ]
        if todo:
            kw = {
                "bottleneck": entry["bottleneck"],
                "act": entry["act"],
                "dropout": entry.get("dropout", 0.0),
            }
            apply_adapters(model, [_exact(n) for n in todo], **kw)  # changes nothing when it raises
            undo.extend(partial(_detach_adapter, modules[n]) for n in todo)
        return
    for name, cls_name in entry["modules"].items():
        found = type(modules[name]).__name__ if name in modules else None
        if found != cls_name:
            raise ValueError(
                f"PEFT module {name!r}: expected a {cls_name} in the model, found {found}; build it before loading"
            )


def _model_key(key: str) -> str:
    """A saved key (peft layout) -> our parameter name."""
    key = key.removeprefix(PREFIX)
    for ours in ("lora_A", "lora_B"):
        for suffix in (f".{ours}.weight", f".{ours.replace('lora_', 'lora_embedding_')}"):
            if key.endswith(suffix):
                return key[: -len(suffix)] + "." + ours
    return key


def _check_state(params: dict[str, nn.Parameter], header: dict[str, tuple], folder: Path) -> None:
    """Every PEFT parameter has a saved tensor of its shape and floating dtype, and nothing else is saved."""
    saved = {_model_key(k): v for k, v in header.items()}
    missing = sorted(params.keys() - saved.keys())
    unexpected = sorted(saved.keys() - params.keys())
    if missing or unexpected:
        raise ValueError(
            f"adapter in {folder} does not fit the model: missing keys {missing[:8]} (of {len(missing)}), "
            f"unexpected keys {unexpected[:8]} (of {len(unexpected)})"
        )
    wrong = [
        f"{name.rpartition('.')[0]} ({name.rpartition('.')[2]}): expected {tuple(params[name].shape)}, "
        f"found {saved[name][1]}"
        for name in params
        if tuple(params[name].shape) != saved[name][1]
    ]
    if wrong:
        raise ValueError(f"shape mismatch loading {folder}: " + "; ".join(wrong))
    not_float = sorted(k for k, (dtype, _) in saved.items() if dtype not in _FLOAT_DTYPES)
    if not_float:
        raise ValueError(
            f"{folder / WEIGHTS_NAME}: tensors {not_float[:8]} are not floating point ({saved[not_float[0]][0]})"
        )


def load_adapter(model: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Load a folder written by `save_adapter` or by peft's `save_pretrained` (LoRA) into `model`, in place.

    When `model` has no LoRA layers (or adapters) yet, they are first applied as the config says. The files are
    checked first (config entries, a complete safetensors file), then every key and shape; on any error the
    layers applied here are removed again, so the model is exactly as before (module tree and every tensor).

    Returns:
        The names of the loaded parameters.

    Raises:
        FileNotFoundError: the folder or one of its two files is missing.
        ValueError: a malformed config or weights file (naming it), missing / unexpected keys, a shape mismatch
            (naming the module, the expected and the found shape), a merged LoRA layer, or a config vlblocks does
            not support.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    folder = _files.resolve_complete(_files.check_path("folder", folder), _check_folder)
    entries, header = _check_folder(folder)
    merged = [name for name, layer in lora_layers(model) if layer.merged]
    if merged:
        raise ValueError(f"LoRA layers {merged[:5]} are merged; call unmerge_lora(model) before load_adapter")
    had_lora = any(True for _ in lora_layers(model))
    undo: Undo = []
    try:
        for entry in entries:
            if entry["peft_type"] == "LORA":
                _prepare_lora(model, entry, folder, undo)
            else:
                _prepare_modules(model, entry, undo)
        params = dict(peft_named_parameters(model))
        _check_state(params, header, folder)
        if had_lora:
            for entry in entries:
                if entry["peft_type"] == "LORA":
                    _check_existing_lora(list(lora_layers(model)), entry, folder)
        tensors = {_model_key(k): v for k, v in _files.load_safetensors(folder / WEIGHTS_NAME).items()}
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])
    return list(params)
