"""A view of a model whose state dict holds only what fine-tuning changed outside the PEFT layers.

With LoRA, adapters or a soft prompt, a run saves the PEFT weights in peft's adapter format
(`vlblocks.peft.save_adapter`) and, next to them, the other modules that trained (a new image encoder, the projector,
the cross-attention): `TrainedView(model)` is an `nn.Module` whose ``state_dict`` is exactly those parameters (those
with ``requires_grad`` that are not PEFT parameters) plus the model's buffers, and whose ``load_state_dict`` copies
them back, so `vlblocks.training.save_checkpoint` / `load_checkpoint` store a checkpoint of the trained weights only
and never a copy of the frozen base model.

Shapes: any (the view copies tensors as they are).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["TrainedView"]


class TrainedView(nn.Module):
    """The trained, non-PEFT parameters and the buffers of `model`, under their names in `model`.

    The set is fixed at construction (call it after choosing what trains). The model is not a submodule of the
    view, so the view's own ``parameters()`` is empty; ``state_dict()`` returns detached tensors of the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        from vlblocks.peft.inject import peft_named_parameters

        object.__setattr__(self, "_model", model)  # not registered: the view owns nothing
        peft = {id(p) for _, p in peft_named_parameters(model)}
        self.names = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in peft]
        self.buffer_names = [n for n, _ in model.named_buffers()]

    def _tensors(self) -> dict[str, torch.Tensor]:
        params, buffers = dict(self._model.named_parameters()), dict(self._model.named_buffers())
        persistent = set(self._model.state_dict().keys())
        out = {n: params[n] for n in self.names}
        out.update({n: buffers[n] for n in self.buffer_names if n in persistent})
        return out

    def state_dict(self, *args: Any, **kwargs: Any) -> OrderedDict[str, torch.Tensor]:  # type: ignore[override]
        """{name: tensor} of the trained non-PEFT parameters and the persistent buffers (detached)."""
        return OrderedDict((n, t.detach()) for n, t in self._tensors().items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Copy the tensors of `state_dict` into the model; ``strict``: the keys must be exactly the view's."""
        own = self._tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict does not fit the view: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for name, value in state_dict.items():
                if name in own:
                    own[name].copy_(value)
        return nn.modules.module._IncompatibleKeys(missing, unexpected)
