"""LoRA layers: a frozen layer plus a trainable low-rank update `W + scaling * B @ A` (Hu et al. 2021).

Each class subclasses the layer it adapts and shares that layer's weight and bias (it is built with `from_layer`,
which copies no tensor), so the base state-dict keys do not change (`q.weight` stays `q.weight`); the update adds the
Parameters `lora_A` and `lora_B`. `lora_B` starts at zero, so a fresh LoRA layer computes exactly what the base layer
computes. `scaling` is `alpha / r`, or `alpha / sqrt(r)` with rank-stabilised LoRA (Kalajdzievski 2023).
The forward computes `base(x) + scaling * (drop(x) @ A^T) @ B^T` and never forms the (out, in) delta; a merged layer
(`merge()`) adds the delta to its weight once, in float32, and then runs exactly the base layer.

Parameter layouts (the same as peft's saved tensors, which `vlblocks.peft.io` maps to and from):

| layer | lora_A | lora_B | peft key |
|---|---|---|---|
| `LoRALinear` | (r, in) | (out, r) | `lora_A.weight`, `lora_B.weight` |
| `LoRAConv1D` (HF GPT-2) | (r, in) | (out, r) | `lora_A.weight`, `lora_B.weight` (fan_in_fan_out) |
| `LoRAEmbedding` | (r, V) | (D, r) | `lora_embedding_A`, `lora_embedding_B` |
| `LoRAConv2d` | (r, in/groups, kh, kw) | (out, r/groups, 1, 1) | `lora_A.weight`, `lora_B.weight` |

`LoRAConv2d`'s A is a convolution with the base layer's kernel, stride, padding, dilation, groups and padding mode,
and B a grouped 1x1 convolution, so the update is always an exact (mergeable) conv weight delta; with groups=1 and
no dilation the layout is peft's.

Shapes: B batch, N tokens, C/in input width, out output width, r rank, V vocabulary, D embedding width,
kh/kw kernel size, H/W spatial size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlblocks._checks import check_dropout, check_positive_int, check_positive_number
from vlblocks.peft.dropout import LoRADropout
from vlblocks.utils import hf_conv1d_class

__all__ = [
    "LoRADropout",
    "LoRALayer",
    "LoRALinear",
    "LoRAEmbedding",
    "LoRAConv2d",
    "LoRAConv1D",
    "check_lora_args",
    "lora_class_for",
]

# attributes a LoRA layer adds to the base layer's __dict__ (removed again by `to_base`)
_LORA_ATTRS = ("r", "lora_alpha", "scaling", "use_rslora", "lora_dropout_p", "merged", "base_class")


def check_lora_args(r: Any, alpha: Any, dropout: Any) -> None:
    """Validate LoRA's rank (positive int), alpha (finite positive number) and dropout ([0, 1))."""
    check_positive_int("r", r)
    check_positive_number("alpha", alpha)
    check_dropout("dropout", dropout)


def _shallow_state(layer: nn.Module) -> dict[str, Any]:
    """`layer.__dict__` with its parameter / buffer / child containers copied (tensors and hooks are shared)."""
    state = dict(layer.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        state[key] = state[key].copy()
    return state


def _lora_dtype(weight: torch.Tensor) -> torch.dtype:
    """LoRA parameters live in float32 for half-precision bases (like peft's autocast_adapter_dtype)."""
    return torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype


def _merge_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a merge computes in: float32, or float64 for a float64 base (never less than the weight's)."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


class LoRALayer:
    """Mixin shared by the LoRA layers: construction from a base layer, merge / unmerge, back to the base class.

    Attributes:
        r, lora_alpha, scaling, use_rslora: the rank, alpha, `alpha / r` (or `alpha / sqrt(r)`) and the rsLoRA flag.
        lora_dropout_p: dropout probability on the LoRA input; `lora_dropout` is `LoRADropout` or `nn.Identity`.
        merged: True when the update is added to the weight (the forward then skips the LoRA branch).
        base_class: the class of the wrapped layer (`to_base` returns an instance of it).
    """

    base_types: tuple[type, ...] = ()
    base_name = "layer"
    lora_A: nn.Parameter
    lora_B: nn.Parameter
    weight: nn.Parameter

    @classmethod
    def from_layer(
        cls,
        layer: nn.Module,
        *,
        r: int = 8,
        alpha: float = 16,
        dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> LoRALayer:
        """A LoRA layer sharing `layer`'s parameters, buffers, hooks and attributes (nothing is copied).

        Args:
            layer: the layer to adapt (an instance of the class this LoRA class subclasses).
            r: rank of the update.
            alpha: scale numerator: `scaling = alpha / r` (or `alpha / sqrt(r)` with `use_rslora`).
            dropout: dropout probability on the LoRA branch's input, in [0, 1).
            use_rslora: rank-stabilised scaling.
        """
        check_lora_args(r, alpha, dropout)
        if isinstance(layer, LoRALayer):
            raise ValueError(f"layer is already LoRA-wrapped ({type(layer).__name__})")
        if not cls.adapts(layer):
            raise TypeError(f"{cls.__name__}.from_layer expects a {cls.base_name}, got {type(layer).__name__}")
        concrete = cls._concrete_class()
        new = concrete.__new__(concrete)
        # share every tensor and attribute; copy only the containers so the two objects stay independent
        new.__dict__.update(_shallow_state(layer))
        new.base_class = type(layer)
        new.r, new.lora_alpha, new.use_rslora = r, alpha, bool(use_rslora)
        new.scaling = float(alpha / math.sqrt(r) if use_rslora else alpha / r)
        new.lora_dropout_p = float(dropout)
        new.merged = False
        new.lora_dropout = (LoRADropout(dropout) if dropout > 0 else nn.Identity()).train(layer.training)
        shape_a, shape_b = new._lora_shapes()
        kw = {"device": new.weight.device, "dtype": _lora_dtype(new.weight)}
        new.lora_A = nn.Parameter(torch.empty(shape_a, **kw))
        new.lora_B = nn.Parameter(torch.zeros(shape_b, **kw))
        new.reset_lora_parameters()
        return new

    @classmethod
    def base_classes(cls) -> tuple[type, ...]:
        """The layer classes this LoRA class adapts."""
        return cls.base_types

    @classmethod
    def adapts(cls, layer: object) -> bool:
        """True when `layer` is an instance of a class this LoRA class adapts."""
        return isinstance(layer, cls.base_classes()) if cls.base_classes() else False

    @classmethod
    def _concrete_class(cls) -> type:
        """The class `from_layer` instantiates (itself; `LoRAConv1D` builds its transformers subclass lazily)."""
        return cls

    def _lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def reset_lora_parameters(self) -> None:
        """`lora_A` kaiming-uniform (a=sqrt(5), like nn.Linear and peft) and `lora_B` zero: the update is zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """The update `scaling * B @ A` in the layout of `weight`, in float32 (float64 for a float64 base)."""
        raise NotImplementedError

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """lora_A and lora_B in the merge dtype."""
        compute = _merge_dtype(self.weight)
        return self.lora_A.to(compute), self.lora_B.to(compute)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update to the weight (computed in float32, then cast); a no-op when already merged."""
        if self.merged:
            return
        compute = _merge_dtype(self.weight)
        self.weight.copy_(self.weight.to(compute) + self.delta_weight().to(compute))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the weight again; a no-op when not merged."""
        if not self.merged:
            return
        self.weight.copy_(self.weight.to(_merge_dtype(self.weight)) - self.delta_weight())
        self.merged = False

    def unmerged_weight(self) -> torch.Tensor:
        """The base weight without the update (a new tensor when merged, `weight` itself when not)."""
        if not self.merged:
            return self.weight
        with torch.no_grad():
            return (self.weight.to(_merge_dtype(self.weight)) - self.delta_weight()).to(self.weight.dtype)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """Always save the unmerged base weight, so a checkpoint loads the same into a merged or unmerged model."""
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        if self.merged and prefix + "weight" in destination:
            destination[prefix + "weight"] = self.unmerged_weight().detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Load the (unmerged) base weight and the LoRA factors; a merged layer then merges the loaded update."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]
        if self.merged:
            with torch.no_grad():
                compute = _merge_dtype(self.weight)
                self.weight.copy_(self.weight.to(compute) + self.delta_weight().to(compute))

    def to_base(self, *, merge: bool = True) -> nn.Module:
        """A plain instance of the base class sharing this layer's weight (merged first when `merge`)."""
        if merge:
            self.merge()
        elif self.merged:
            self.unmerge()
        base = self.base_class.__new__(self.base_class)
        state = _shallow_state(self)
        for key in _LORA_ATTRS:
            state.pop(key, None)
        state["_parameters"].pop("lora_A", None)
        state["_parameters"].pop("lora_B", None)
        state["_modules"].pop("lora_dropout", None)
        base.__dict__.update(state)
        return base

    def _lora_extra_repr(self) -> str:
        extra = f", r={self.r}, alpha={self.lora_alpha}, dropout={self.lora_dropout_p}"
        return extra + (", rslora" if self.use_rslora else "") + (", merged" if self.merged else "")


class LoRALinear(LoRALayer, nn.Linear):
    """`nn.Linear` with a LoRA update. lora_A (r, in), lora_B (out, r). forward: (..., in) -> (..., out)."""

    base_types = (nn.Linear,)
    base_name = "Linear"

    def _lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.r, self.in_features), (self.out_features, self.r)

    def delta_weight(self) -> torch.Tensor:
        a, b = self._factors()
        return (b @ a) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return F.linear(x, self.weight, self.bias)  # (..., out)
        x2d = x.reshape(-1, self.in_features)  # (M, in)
        out = F.linear(x2d, self.weight, self.bias)  # (M, out)
        h = F.linear(self.lora_dropout(x2d), self.lora_A.to(x.dtype)).to(out.dtype)  # (M, r)
        # out += scaling * h @ B^T, accumulated by the GEMM itself (in place on a non-view: no extra pass)
        out.addmm_(h, self.lora_B.to(out.dtype).t(), alpha=self.scaling)
        return out.view(*x.shape[:-1], self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._lora_extra_repr()


class LoRAConv1D(LoRALayer, nn.Module):
    """HF GPT-2 `Conv1D` (weight (in, out)) with a LoRA update. lora_A (r, in), lora_B (out, r).

    forward: (..., in) -> (..., out). Defining this class imports no transformers: `from_layer` builds instances of
    a subclass of both `LoRAConv1D` and transformers' `Conv1D` (made once, the first time a `Conv1D` is wrapped),
    so a wrapped layer is an instance of both, like the other LoRA layers.
    """

    base_name = "Conv1D"
    _with_conv1d: type | None = None

    @classmethod
    def base_classes(cls) -> tuple[type, ...]:
        conv1d = hf_conv1d_class()
        return () if conv1d is None else (conv1d,)

    @classmethod
    def _concrete_class(cls) -> type:
        if LoRAConv1D._with_conv1d is None:
            conv1d = hf_conv1d_class()
            LoRAConv1D._with_conv1d = type("LoRAConv1D", (LoRAConv1D, conv1d), {"__module__": __name__})
        return LoRAConv1D._with_conv1d

    def _lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.r, self.nx), (self.nf, self.r)

    def delta_weight(self) -> torch.Tensor:
        a, b = self._factors()
        return (b @ a).t() * self.scaling  # (in, out) like Conv1D.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1] + (self.nf,)
        x2d = x.reshape(-1, self.nx)  # (M, in)
        out = torch.addmm(self.bias, x2d, self.weight)  # (M, out)
        if not self.merged:
            h = (self.lora_dropout(x2d) @ self.lora_A.to(x.dtype).t()).to(out.dtype)  # (M, r)
            out.addmm_(h, self.lora_B.to(out.dtype).t(), alpha=self.scaling)
        return out.view(shape)  # (..., out)

    __repr__ = nn.Module.__repr__  # Conv1D overrides it and would hide extra_repr

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}" + self._lora_extra_repr()


class LoRAEmbedding(LoRALayer, nn.Embedding):
    """`nn.Embedding` with a LoRA update. lora_A (r, V), lora_B (D, r). forward: ids (...) -> (..., D).

    The update of token t is `scaling * B @ A[:, t]`. Unlike peft (A zero, B normal) A is drawn from a standard
    normal and B is zero; both start as the identity and both layouts load. A's `padding_idx` column starts at zero
    and gets no gradient, so the padding row never changes. Dropout does not apply (the input is ids), as in peft.
    """

    base_types = (nn.Embedding,)
    base_name = "Embedding"

    def _lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.r, self.num_embeddings), (self.embedding_dim, self.r)

    def reset_lora_parameters(self) -> None:
        nn.init.normal_(self.lora_A)
        nn.init.zeros_(self.lora_B)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.lora_A[:, self.padding_idx] = 0

    def delta_weight(self) -> torch.Tensor:
        a, b = self._factors()
        return (b @ a).t() * self.scaling  # (V, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return super().forward(x)  # (..., D)
        ids = x.reshape(-1)  # (M,)
        out = super().forward(ids)  # (M, D)
        h = F.embedding(
            ids, self.lora_A.t(), padding_idx=self.padding_idx, scale_grad_by_freq=self.scale_grad_by_freq
        )
        out.addmm_(h.to(out.dtype), self.lora_B.to(out.dtype).t(), alpha=self.scaling)  # h: (M, r)
        return out.view(*x.shape, self.embedding_dim)  # (..., D)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._lora_extra_repr()


class LoRAConv2d(LoRALayer, nn.Conv2d):
    """`nn.Conv2d` with a LoRA update. lora_A (r, in/groups, kh, kw), lora_B (out, r/groups, 1, 1).

    The LoRA branch is a conv with the base kernel size, stride, padding, dilation, groups and padding mode into r
    channels, then a grouped 1x1 conv; r must be divisible by `groups`. forward: (B, in, H, W) -> (B, out, H', W').
    """

    base_types = (nn.Conv2d,)
    base_name = "Conv2d"

    def _lora_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self.r % self.groups != 0:
            raise ValueError(f"r must be divisible by the conv's groups ({self.groups}), got r={self.r}")
        kh, kw = self.kernel_size
        return (self.r, self.in_channels // self.groups, kh, kw), (
            self.out_channels,
            self.r // self.groups,
            1,
            1,
        )

    def delta_weight(self) -> torch.Tensor:
        g = self.groups
        a, b = self._factors()
        a = a.reshape(g, self.r // g, -1)  # (r, in/g, kh, kw) -> (g, r/g, in/g*kh*kw)
        b = b.reshape(g, self.out_channels // g, self.r // g)  # (out, r/g, 1, 1) -> (g, out/g, r/g)
        return torch.bmm(b, a).reshape(self.weight.shape) * self.scaling  # (out, in/g, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, self.bias)  # (B, out, H', W')
        if self.merged:
            return out
        h = self._conv_forward(self.lora_dropout(x), self.lora_A.to(x.dtype), None)  # (B, r, H', W')
        lora = F.conv2d(h, self.lora_B.to(h.dtype), groups=self.groups)  # (B, out, H', W')
        return torch.add(out, lora.to(out.dtype), alpha=self.scaling)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._lora_extra_repr()


_CLASSES: tuple[type[LoRALayer], ...] = (LoRALinear, LoRAConv1D, LoRAEmbedding, LoRAConv2d)


def lora_class_for(layer: nn.Module) -> type[LoRALayer] | None:
    """The LoRA class that adapts `layer` (None for unsupported layers and for LoRA layers themselves)."""
    if isinstance(layer, LoRALayer):
        return None
    for cls in _CLASSES:
        if cls.adapts(layer):
            return cls
    return None
