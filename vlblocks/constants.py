"""Constants and lookup tables defined once for the whole library: the ignore index and the activation names.

Modules import these instead of repeating them, so a label that is "not a class" and an activation spelled
``"gelu"`` mean the same thing everywhere. Imports only torch.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ACTIVATIONS", "IGNORE_INDEX"]

# label of a position / example that no loss or metric counts (torch's `cross_entropy(ignore_index=-100)`)
IGNORE_INDEX = -100

# activation name -> constructor; `vlblocks.layers.make_activation` builds from it
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}
