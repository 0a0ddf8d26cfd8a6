"""Bottleneck adapters attached to existing layers with forward hooks (Houlsby et al. 2019).

An adapter is a small residual MLP `x + up(act(down(x)))` with `up` zero-initialised, so a freshly adapted model
computes exactly what the base model computes. `apply_adapters` attaches one as a child named `adapter` of each
selected layer and applies it to that layer's output with a forward hook, so every base state-dict key is unchanged
and the adapter weights appear as `<layer>.adapter.down.weight`, ... Houlsby placement = after the attention output
projection and after the MLP output projection of every block (timm ViT: `attn.proj`, `mlp.fc2`; HF BERT / RoBERTa:
`attention.output.dense` and `layer.<i>.output.dense`; HF GPT-2: `attn.c_proj`, `mlp.c_proj`).

Shapes: B batch, N tokens, D width of the adapted layer's output (`dim`), R bottleneck width (`bottleneck`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int
from vlblocks.layers.mlp import make_activation
from vlblocks.peft.match import select_modules
from vlblocks.utils import is_hf_conv1d

__all__ = ["BottleneckAdapter", "apply_adapters", "remove_adapters"]

_CHILD = "adapter"  # name of the adapter child on the adapted layer
_HANDLE = "_adapter_hook_handle"  # attribute holding the forward-hook handle on the adapted layer


class BottleneckAdapter(nn.Module):
    """Residual bottleneck MLP: `x + up(drop(act(down(x))))`; the identity when freshly built.

    Args:
        dim: width D of the input and output.
        bottleneck: hidden width R (Houlsby et al. use 8-256; R << D).
        act: activation name, class or instance (see `vlblocks.layers.mlp.make_activation`).
        dropout: dropout after the activation.
    """

    is_peft_module = True

    def __init__(
        self,
        dim: int,
        *,
        bottleneck: int,
        act: str | type[nn.Module] | nn.Module = "gelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("bottleneck", bottleneck)
        check_dropout("dropout", dropout)
        self.dim = dim
        self.bottleneck = bottleneck
        self.down = nn.Linear(dim, bottleneck)
        self.act = make_activation(act)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def out_dim(self) -> int:
        """Output width (= `dim`)."""
        return self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return x + self.up(self.drop(self.act(self.down(x))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bottleneck={self.bottleneck}"


def _adapter_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """Forward hook: run `module.adapter` on the output (on element 0 when the output is a tuple).

    A plain module-level function that reads the adapter from the hooked module, so a deep copy of the model
    hooks its own copy of the adapter.
    """
    adapter = getattr(module, _CHILD)
    if isinstance(output, tuple):
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _infer_dim(name: str, module: nn.Module) -> int:
    """Output width of `module`: `nn.Linear.out_features` or HF `Conv1D.nf`."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if is_hf_conv1d(module) and isinstance(getattr(module, "nf", None), int):  # HF GPT-2 (or LoRA-wrapped)
        return module.nf
    raise ValueError(
        f"cannot infer the output width of {name!r} ({type(module).__name__}); expected nn.Linear or HF Conv1D, "
        "pass dim=<width of its output's last axis>"
    )


def _inside_adapter(model: nn.Module) -> set[str]:
    """Names of the modules that are adapters or inside one (never adapted themselves)."""
    names: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, BottleneckAdapter):
            names.update(f"{name}.{sub}" if sub else name for sub, _ in module.named_modules())
    return names


def _device_dtype(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of the first parameter of `module` (None, None when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return None, None


def apply_adapters(
    model: nn.Module,
    targets: str | Iterable[str],
    *,
    bottleneck: int,
    act: str | type[nn.Module] | nn.Module = "gelu",
    dropout: float = 0.0,
    exclude: str | Iterable[str] | None = None,
    dim: int | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Attach a `BottleneckAdapter` to the output of every module selected by `targets`, in place.

    Each selected module gets a child `adapter` and a forward hook `output -> adapter(output)` (element 0 of a
    tuple output), so base state-dict keys are unchanged. Nothing is modified when an error is raised.

    Args:
        model: any `nn.Module` (timm, HF, vlblocks).
        targets: name suffixes or full-match regexes (see `vlblocks.peft.match.select_modules`).
        bottleneck, act, dropout: passed to every `BottleneckAdapter`.
        exclude: patterns whose matches are skipped.
        dim: output width D for all targets; by default read from `nn.Linear.out_features` / HF `Conv1D.nf`.
        dry_run: only return the names that would be adapted.

    Returns:
        The names of the adapted modules, in model order.
    """
    if dim is not None:
        check_positive_int("dim", dim)
    skip = _inside_adapter(model)
    names = select_modules(model, targets, exclude=exclude, predicate=lambda n, m: n not in skip)
    if not names:
        raise ValueError(
            f"targets {targets!r} (exclude={exclude!r}) matched no module of {type(model).__name__}"
        )
    modules = dict(model.named_modules())
    plan = []
    for name in names:
        target = modules[name]
        if hasattr(target, _CHILD) or hasattr(target, _HANDLE):
            raise ValueError(
                f"module {name!r} already has an attribute {_CHILD!r} (an adapter is already attached)"
            )
        plan.append((name, target, dim if dim is not None else _infer_dim(name, target)))
    if dry_run:
        return names
    adapters = [
        BottleneckAdapter(width, bottleneck=bottleneck, act=act, dropout=dropout) for _, _, width in plan
    ]
    for (_, target, _), adapter in zip(plan, adapters):
        device, dtype = _device_dtype(target)
        if device is not None:
            adapter = adapter.to(device=device, dtype=dtype)
        target.add_module(_CHILD, adapter)
        setattr(target, _HANDLE, target.register_forward_hook(_adapter_hook))
    return names


def remove_adapters(model: nn.Module) -> list[str]:
    """Remove every adapter attached by `apply_adapters` (hooks and children), in place.

    Returns:
        The names of the modules that had an adapter, in model order.
    """
    removed = []
    for name, module in list(model.named_modules()):
        handle = module.__dict__.get(_HANDLE)
        if handle is None:
            continue
        handle.remove()
        delattr(module, _HANDLE)
        if isinstance(getattr(module, _CHILD, None), BottleneckAdapter):
            delattr(module, _CHILD)
        removed.append(name)
    return removed
