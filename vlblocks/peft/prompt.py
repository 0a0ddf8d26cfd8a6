"""Soft prompts: trainable virtual-token embeddings prepended to the input embeddings (Lester et al. 2021).

Prompt tuning keeps the whole model frozen and learns only P embedding vectors that are concatenated in front of
the token embeddings, extending the attention mask (1 on the virtual positions) and the labels (-100 on the virtual
positions, so they are never predicted). Initialised at random (normal, std 0.02) or from the embeddings of real
vocabulary tokens (the paper's "sampled vocab" / "class label" inits, via `SoftPrompt.from_token_ids`). Unlike LoRA
or adapters, a soft prompt that the model attends to cannot be an exact identity; it is the identity only when the
virtual positions are masked out and the real tokens keep their original position ids.

Shapes: B batch, T real tokens, P virtual tokens (`num_tokens`), D embedding width (`dim`), V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from vlblocks._checks import check_positive_int
from vlblocks.constants import IGNORE_INDEX

__all__ = ["SoftPrompt", "SoftPromptOutput"]


class SoftPromptOutput(NamedTuple):
    """Inputs with the virtual tokens prepended.

    Attributes:
        inputs_embeds: (B, P+T, D).
        attention_mask: (B, P+T), 1 on the virtual positions, dtype of the given mask (long when none was given).
        labels: (B, P+T) with -100 on the virtual positions, or None when no labels were given.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


class SoftPrompt(nn.Module):
    """P trainable virtual-token embeddings, prepended to a batch of input embeddings.

    Args:
        num_tokens: number of virtual tokens P (Lester et al. use 1-150; 20-100 works well).
        dim: embedding width D of the model it feeds.
        init: `"random"` (normal, std 0.02) or a (P, D) floating tensor to copy (e.g. embeddings of real words).
    """

    is_peft_module = True

    def __init__(self, num_tokens: int, dim: int, *, init: str | torch.Tensor = "random") -> None:
        super().__init__()
        check_positive_int("num_tokens", num_tokens)
        check_positive_int("dim", dim)
        self.num_tokens = num_tokens
        self.dim = dim
        if isinstance(init, str):
            if init != "random":
                raise ValueError(f"init must be 'random' or a ({num_tokens}, {dim}) tensor, got {init!r}")
            weight = torch.randn(num_tokens, dim) * 0.02
        elif isinstance(init, torch.Tensor):
            if not init.is_floating_point():
                raise TypeError(f"init must be a floating-point tensor, got dtype {init.dtype}")
            if tuple(init.shape) != (num_tokens, dim):
                raise ValueError(f"init must have shape ({num_tokens}, {dim}), got {tuple(init.shape)}")
            weight = init.detach().clone()
        else:
            raise TypeError(f"init must be 'random' or a torch.Tensor, got {type(init).__name__}")
        self.embedding = nn.Parameter(weight)  # (P, D)

    @classmethod
    def from_token_ids(
        cls, embedding_layer: nn.Module, token_ids: Sequence[int] | torch.Tensor
    ) -> SoftPrompt:
        """A prompt initialised with copies of the embeddings of `token_ids` (P ids -> P virtual tokens).

        Args:
            embedding_layer: the model's input embedding (`nn.Embedding` or any module with a (V, D) `weight`),
                e.g. `model.get_input_embeddings()`.
            token_ids: P ids in [0, V), e.g. the tokenised class names or words sampled from the vocabulary.
        """
        weight = getattr(embedding_layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise TypeError(
                f"embedding_layer must have a 2-D (V, D) weight, got {type(embedding_layer).__name__} with "
                f"weight {None if weight is None else tuple(getattr(weight, 'shape', ()))}"
            )
        ids = torch.as_tensor(token_ids, device=weight.device)
        if ids.ndim != 1 or ids.numel() == 0 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"token_ids must be a non-empty 1-D sequence of ints, got {token_ids!r}")
        vocab = weight.shape[0]
        if bool((ids < 0).any()) or bool((ids >= vocab).any()):
            raise ValueError(f"token_ids must lie in [0, {vocab}), got {ids.tolist()}")
        return cls(ids.numel(), weight.shape[1], init=weight.detach()[ids.long()])  # (P, D)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SoftPromptOutput:
        """Prepend the prompt to a batch.

        Args:
            inputs_embeds: (B, T, D) floating token embeddings.
            attention_mask: (B, T), any dtype (1 / True = real token), or None (all real).
            labels: (B, T) integer labels, or None.

        Returns:
            `SoftPromptOutput(inputs_embeds (B, P+T, D), attention_mask (B, P+T), labels (B, P+T) or None)`.
        """
        if not isinstance(inputs_embeds, torch.Tensor) or not inputs_embeds.is_floating_point():
            raise TypeError(f"inputs_embeds must be a floating-point tensor, got {_describe(inputs_embeds)}")
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.dim:
            raise ValueError(
                f"inputs_embeds must have shape (B, T, {self.dim}), got {tuple(inputs_embeds.shape)}"
            )
        b, t, _ = inputs_embeds.shape
        p = self.num_tokens
        prompt = self.embedding.to(inputs_embeds.dtype).unsqueeze(0).expand(b, -1, -1)  # (P, D) -> (B, P, D)
        embeds = torch.cat([prompt, inputs_embeds], dim=1)  # (B, P+T, D)

        if attention_mask is None:
            mask = torch.ones(b, p + t, dtype=torch.long, device=inputs_embeds.device)
        else:
            _check_2d("attention_mask", attention_mask, b, t)
            ones = torch.ones(b, p, dtype=attention_mask.dtype, device=attention_mask.device)
            mask = torch.cat([ones, attention_mask], dim=1)  # (B, P+T)

        if labels is not None:
            _check_2d("labels", labels, b, t)
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
            ignore = torch.full((b, p), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            labels = torch.cat([ignore, labels], dim=1)  # (B, P+T)
        return SoftPromptOutput(embeds, mask, labels)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}"


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


def _check_2d(name: str, x: object, b: int, t: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != (b, t):
        raise ValueError(
            f"{name} must have shape (B, T) = ({b}, {t}) like inputs_embeds, got {tuple(x.shape)}"
        )
