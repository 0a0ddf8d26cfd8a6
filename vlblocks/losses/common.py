"""What the contrastive losses share: gathering embeddings across ranks with gradients, and argument checks.

Contrastive losses compare each embedding with the whole global batch (CLIP, Radford et al. 2021; the local-loss
form of open_clip, Cherti et al. 2023, "Reproducible scaling laws for contrastive language-image learning"). Each
rank gathers the other ranks' embeddings through `torch.distributed.nn.functional.all_gather`, whose backward sums
the gradient every rank computed for a slice and hands it back to the rank that owns the slice. So under DDP
(which averages parameter gradients over ranks) N ranks of batch b train exactly like one process of batch N x b.

Shape legend: W world size, B local batch, E embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from vlblocks._checks import check_finite_number, check_positive_number, check_tensor

__all__ = [
    "check_embeddings",
    "check_scalar",
    "gather_with_grad",
    "log_scale_from_temperature",
    "process_group_size",
]


def process_group_size() -> int:
    """The number of ranks of the default process group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(B, ...) on every rank -> (W * B, ...) concatenated in rank order, differentiable w.r.t. the local slice.

    Every rank must pass the same shape (use ``drop_last=True`` in the data loader). The backward pass sums, over
    ranks, the gradient of the gathered tensor and returns this rank's slice of the sum. Without a process group
    (or with one rank) the tensor is returned unchanged.
    """
    if process_group_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)  # W x (B, ...) -> (W * B, ...)


def check_embeddings(image_embeds: object, text_embeds: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Both embeddings as floating (B, E) tensors of the same shape; ValueError / TypeError naming the problem."""
    image_embeds = check_tensor("image_embeds", image_embeds, ndim=2, dtype="float", shape="(B, E)")
    text_embeds = check_tensor("text_embeds", text_embeds, ndim=2, dtype="float", shape="(B, E)")
    if image_embeds.shape[0] != text_embeds.shape[0]:
        raise ValueError(
            "image_embeds and text_embeds must hold the same number of pairs (B), got "
            f"{image_embeds.shape[0]} images and {text_embeds.shape[0]} texts"
        )
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            "image_embeds and text_embeds must have the same width E, got "
            f"{image_embeds.shape[1]} and {text_embeds.shape[1]}"
        )
    return image_embeds, text_embeds


def check_scalar(name: str, value: object, *, positive: bool = False) -> torch.Tensor | float:
    """A number (finite, > 0 when `positive`) or a one-element floating tensor (kept as is, so it can carry grad)."""
    if isinstance(value, torch.Tensor):
        check_tensor(name, value, dtype="float", nonempty=False)
        if value.numel() != 1:
            shape = tuple(value.shape)
            raise ValueError(f"{name} must be a number or a one-element tensor, got shape {shape}")
        return value.reshape(())
    if positive:
        return check_positive_number(name, value)
    return check_finite_number(name, value)


def log_scale_from_temperature(temperature: float, max_scale: float) -> float:
    """log(1 / temperature), after checking that the scale does not exceed `max_scale`."""
    temperature = check_positive_number("temperature", temperature)
    max_scale = check_positive_number("max_scale", max_scale)
    if 1.0 / temperature > max_scale * (1 + 1e-12):
        raise ValueError(
            f"temperature must be >= 1 / max_scale = {1.0 / max_scale:.4g}, got {temperature!r}"
        )
    return math.log(1.0 / temperature)
