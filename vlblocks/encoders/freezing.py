"""Freezing an encoder wrapper: the one `freeze()` / `unfreeze()` both `ImageEncoder` and `TextEncoder` use.

A frozen encoder has no trainable parameter and keeps its wrapped model in eval mode (dropout off, norm statistics
fixed), also through later `.train()` calls. Parameters the output never depends on (an HF pooler, DINOv2's mask
token) stay frozen even after `unfreeze()`, so DDP and gradient checks see no unused trainable parameter.

Shapes: none (this module only switches flags).
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from vlblocks.utils import set_trainable

__all__ = ["FreezableEncoder"]

_E = TypeVar("_E", bound="FreezableEncoder")


class FreezableEncoder(nn.Module):
    """Base of the encoder wrappers: `model` is the wrapped module, `_unused` the names of always-frozen parameters.

    Subclasses set `self.model` and `self._unused` (wrapper-level names, e.g. "model.pooler.dense.weight") and call
    `self._freeze_unused()` at the end of their `__init__`.
    """

    model: nn.Module
    _frozen: bool = False
    _unused: frozenset[str] = frozenset()

    def _freeze_unused(self) -> None:
        """Set requires_grad=False on the parameters named in `_unused`; leave the others as they are."""
        for name, param in self.named_parameters():
            if name in self._unused:
                param.requires_grad_(False)

    @property
    def frozen(self) -> bool:
        """True after `freeze()` until `unfreeze()`."""
        return self._frozen

    def freeze(self: _E) -> _E:
        """Make every parameter non-trainable and keep the wrapped model in eval mode (dropout off, norm
        statistics fixed), also through later `.train()` calls. Returns self."""
        set_trainable(self, False)
        self._frozen = True
        self.model.eval()
        return self

    def unfreeze(self: _E) -> _E:
        """Undo `freeze()`: parameters trainable again (except ones the output never uses). Returns self."""
        set_trainable(self, True, skip=self._unused)
        self._frozen = False
        self.model.train(self.training)
        return self

    def train(self: _E, mode: bool = True) -> _E:
        super().train(mode)
        if self._frozen:
            self.model.eval()
        return self
