"""Injecting LoRA into any model (timm, HF, vlblocks), merging it, and choosing what trains (Hu et al. 2021).

`apply_lora` replaces the selected `nn.Linear`, `nn.Embedding`, `nn.Conv2d` and HF `Conv1D` layers by their LoRA
subclasses in place (base parameter names are unchanged). `merge_lora` / `unmerge_lora` fold the update into the
weights and back; `remove_lora` returns plain layers (peft's `merge_and_unload`). PEFT parameters are the `lora_A` /
`lora_B` of LoRA layers and every parameter of a module whose class sets `is_peft_module = True` (bottleneck
adapters, soft prompts); `mark_only_peft_trainable` and `peft_state_dict` work on them (`count_parameters`, re-exported
here for compatibility, lives in `vlblocks.utils`).

Shapes: see `vlblocks.peft.lora` (r rank, in / out widths).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from vlblocks.peft.lora import LoRALayer, check_lora_args, lora_class_for
from vlblocks.peft.match import matches, select_modules
from vlblocks.utils import ParameterCount, count_parameters, is_hf_conv1d

__all__ = [
    "ParameterCount",
    "apply_lora",
    "count_parameters",
    "lora_layers",
    "mark_only_peft_trainable",
    "merge_lora",
    "peft_named_parameters",
    "peft_state_dict",
    "remove_lora",
    "unmerge_lora",
]

ALL_LINEAR = "all-linear"
# top-level children that are output heads and never targeted by "all-linear"
HEAD_NAMES = ("lm_head", "classifier", "head", "score")


def _is_peft_module(module: nn.Module) -> bool:
    return getattr(type(module), "is_peft_module", False) is True


def _never_targeted(model: nn.Module) -> set[str]:
    """Modules inside PEFT modules (adapters, soft prompts) and `nn.MultiheadAttention` projections (it reads
    their weights directly, so a LoRA branch there would never run)."""
    inside: set[str] = set()
    for name, module in model.named_modules():
        if _is_peft_module(module) or isinstance(module, nn.MultiheadAttention):
            inside.update(f"{name}.{sub}" if name else sub for sub, _ in module.named_modules() if sub)
    return inside


def _output_heads(model: nn.Module) -> set[str]:
    """Names of output heads: HF output embeddings, layers tied to an embedding, top-level `HEAD_NAMES` children."""
    heads: set[str] = set()
    output_embeddings = []
    for module in model.modules():
        get = getattr(module, "get_output_embeddings", None)
        if callable(get):
            try:
                out = get()
            except (NotImplementedError, AttributeError):
                out = None
            if isinstance(out, nn.Module):
                output_embeddings.append(out)
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, module in model.named_modules():
        if not name:
            continue
        tied = id(getattr(module, "weight", None)) in embedding_weights and not isinstance(
            module, nn.Embedding
        )
        if tied or any(module is o for o in output_embeddings) or name.split(".")[0] in HEAD_NAMES:
            heads.add(name)
    return heads


def _resolve(
    model: nn.Module, targets: str | Iterable[str], exclude: str | Iterable[str] | None
) -> tuple[list[str], list[str]]:
    """(names of supported matched layers, names of matched LoRA layers)."""
    target_list = [targets] if isinstance(targets, str) else list(targets)
    skip = _never_targeted(model)
    all_linear = any(isinstance(t, str) and t.lower() == ALL_LINEAR for t in target_list)
    if all_linear:
        skip |= _output_heads(model)
        rest = [t for t in target_list if not (isinstance(t, str) and t.lower() == ALL_LINEAR)]
        target_list = [r"(?:.+)"] + rest

    def supported(name: str, module: nn.Module) -> bool:
        if name in skip:
            return False
        if all_linear and not (isinstance(module, nn.Linear) or is_hf_conv1d(module)) and not matches_any(name, rest):
            return False
        return isinstance(module, LoRALayer) or lora_class_for(module) is not None

    def matches_any(name: str, patterns: list[str]) -> bool:
        return any(matches(name, p) for p in patterns)

    names = select_modules(model, target_list, exclude=exclude, predicate=supported)
    modules = dict(model.named_modules())
    wrapped = [n for n in names if isinstance(modules[n], LoRALayer)]
    if not names:
        unsupported = select_modules(
            model, target_list, exclude=exclude, predicate=lambda n, m: n not in skip
        )
        hint = (
            f"; matched only unsupported modules {unsupported[:5]}" if unsupported and not all_linear else ""
        )
        raise ValueError(
            f"targets {targets!r} (exclude={exclude!r}) matched no nn.Linear, nn.Embedding, nn.Conv2d or Conv1D "
            f"of {type(model).__name__}{hint}"
        )
    return names, wrapped


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put `new` wherever `old` is a child (a shared layer may have several parents)."""
    for parent in model.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new


def _wrap(
    model: nn.Module, names: list[str], *, r: int, alpha: float, dropout: float, use_rslora: bool
) -> None:
    modules = dict(model.named_modules())
    new_layers = [
        (
            modules[n],
            lora_class_for(modules[n]).from_layer(
                modules[n], r=r, alpha=alpha, dropout=dropout, use_rslora=use_rslora
            ),
        )
        for n in names
    ]
    for old, new in new_layers:  # every layer is built (and validated) before the model changes
        _replace(model, old, new)


def apply_lora(
    model: nn.Module,
    targets: str | Iterable[str],
    *,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    exclude: str | Iterable[str] | None = None,
    use_rslora: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Replace the selected layers of `model` by LoRA layers, in place.

    Args:
        model: any `nn.Module`.
        targets: module-name suffixes (`"q"`, `"attn.qkv"`), full-match regexes (`r".*\\.(query|value)"`), or
            `"all-linear"`: every `nn.Linear` / HF `Conv1D` except the output head (HF output embeddings, layers tied
            to an input embedding, and top-level `lm_head` / `classifier` / `head` / `score`).
            Only `nn.Linear`, `nn.Embedding`, `nn.Conv2d` and `Conv1D` layers are selected; others are skipped.
        r, alpha, dropout, use_rslora: see `LoRALinear.from_layer`.
        exclude: patterns of module names to skip.
        dry_run: return the names that would be wrapped without changing the model.

    Returns:
        The names of the wrapped layers, in model order.

    Raises:
        ValueError: nothing matched (the message names the patterns), a matched layer is already LoRA-wrapped,
            or r / alpha / dropout is invalid.
    """
    check_lora_args(r, alpha, dropout)
    names, wrapped = _resolve(model, targets, exclude)
    if wrapped:
        raise ValueError(f"modules already LoRA-wrapped: {wrapped[:5]} (call remove_lora first)")
    if not dry_run:
        _wrap(model, names, r=r, alpha=alpha, dropout=dropout, use_rslora=use_rslora)
    return names


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALayer]]:
    """(name, layer) of every LoRA layer of `model`, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALayer):
            yield name, module


def _tied_elsewhere(model: nn.Module) -> dict[int, list[str]]:
    """id(LoRA layer) -> names of the other modules that hold the same weight tensor (tied weights)."""
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            holders.setdefault(id(param), []).append((name, module))
    tied: dict[int, list[str]] = {}
    for _, layer in lora_layers(model):
        others = [n for n, m in holders.get(id(layer.weight), []) if m is not layer]
        if others:
            tied[id(layer)] = sorted(set(others))
    return tied


def _check_mergeable(model: nn.Module) -> None:
    """Refuse to merge into a weight tied to another module (GPT-2's `wte` / `lm_head`): it would change both."""
    tied = _tied_elsewhere(model)
    for name, layer in lora_layers(model):
        if id(layer) in tied and not layer.merged:
            others = ", ".join(repr(n) for n in tied[id(layer)])
            raise ValueError(
                f"cannot merge LoRA into {name!r}: its weight is tied to {others}, so merging would change that "
                "module too; keep the LoRA layer unmerged, or untie the weights first (e.g. clone one of them)"
            )


def merge_lora(model: nn.Module) -> list[str]:
    """Add every LoRA update to its base weight (float32 delta, then cast); merged layers skip the LoRA branch.

    Returns:
        The names of the LoRA layers (already merged ones stay merged).

    Raises:
        ValueError: a LoRA layer's weight is tied to another module (e.g. GPT-2's `lm_head` and
            `transformer.wte`); the message names both and no layer is merged.
    """
    _check_mergeable(model)
    names = []
    for name, layer in lora_layers(model):
        layer.merge()
        names.append(name)
    return names


def unmerge_lora(model: nn.Module) -> list[str]:
    """Subtract every merged LoRA update from its base weight again. Returns the names of the LoRA layers."""
    names = []
    for name, layer in lora_layers(model):
        layer.unmerge()
        names.append(name)
    return names


def remove_lora(model: nn.Module, *, merge: bool = True) -> nn.Module:
    """Replace every LoRA layer by a plain base layer (peft's `merge_and_unload` when `merge`), in place.

    Args:
        merge: keep the update in the weights (True) or drop it, restoring the base weights (False).

    Returns:
        `model` (modified in place).

    Raises:
        ValueError: with `merge`, a LoRA layer's weight is tied to another module (see `merge_lora`).
    """
    if merge:
        _check_mergeable(model)
    for _, layer in list(lora_layers(model)):
        _replace(model, layer, layer.to_base(merge=merge))
    return model


def peft_named_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of every PEFT parameter: LoRA `lora_A` / `lora_B` and all parameters of PEFT modules."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, LoRALayer):
            params = [("lora_A", module.lora_A), ("lora_B", module.lora_B)]
        elif _is_peft_module(module):
            params = list(module.named_parameters())
        else:
            continue
        for pname, param in params:
            if id(param) not in seen:
                seen.add(id(param))
                yield prefix + pname, param


def mark_only_peft_trainable(model: nn.Module, *, extra: str | Iterable[str] | None = None) -> None:
    """Freeze every parameter except the PEFT parameters and those matched by `extra`.

    Args:
        extra: patterns (suffixes or full-match regexes, see `vlblocks.peft.match.matches`) of parameter names or
            of their module names to keep trainable too, e.g. `"head"` for a new classifier head.
    """
    patterns = [] if extra is None else ([extra] if isinstance(extra, str) else list(extra))
    peft_ids = {id(p) for _, p in peft_named_parameters(model)}
    for pname, param in model.named_parameters():
        module_names = [pname.rsplit(".", i)[0] for i in range(1, pname.count(".") + 1)]
        keep = any(matches(n, p) for n in [pname, *module_names] for p in patterns)
        param.requires_grad_(id(param) in peft_ids or keep)


def peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The PEFT parameters (detached) under their model names, e.g. `blocks.0.attn.qkv.lora_A`."""
    return {name: param.detach() for name, param in peft_named_parameters(model)}


