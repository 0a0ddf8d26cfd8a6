"""CLIP's contrastive loss: symmetric InfoNCE over image-text pairs, exact across torch.distributed ranks.

Follows CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision") and the
local-loss form of open_clip (Ilharco et al. 2021; Cherti et al. 2023). For a batch of B pairs with (normalised)
embeddings I and T and a logit scale s = 1 / temperature::

    logits_per_image = (s * I) @ T^T                          # (B, B), row i: image i against every text
    loss = (CE(logits_per_image, arange(B)) + CE(logits_per_image^T, arange(B))) / 2

Under torch.distributed each rank gathers every rank's embeddings with gradients (`gather_with_grad`) and scores
its own B pairs against the W * B of the global batch, with targets offset by rank * B. The mean of the per-rank
losses is the single-process loss of the global batch, and with DDP's gradient averaging the gradients are equal
too. Without a process group (or with ``gather=False``) it is the plain loss of the local batch.

Shape legend: B local batch, W world size, E embedding width.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlblocks.losses.common import (
    check_embeddings,
    check_scalar,
    gather_with_grad,
    log_scale_from_temperature,
    process_group_size,
)

__all__ = ["ContrastiveLoss", "contrastive_loss"]


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    normalize: bool = True,
    gather: bool = True,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the pairs (image i, text i) of a batch.

    Args:
        image_embeds: (B, E) image embeddings; row i pairs with row i of `text_embeds`.
        text_embeds: (B, E) text embeddings.
        logit_scale: the scale s = 1 / temperature (not its log): a positive number or a one-element tensor.
        normalize: L2-normalise both embeddings first (False: they already are, e.g. `DualEncoder` outputs).
        gather: under torch.distributed, score against every rank's pairs (every rank must pass the same B).

    Returns:
        The loss, a 0-d tensor: the mean over this rank's B pairs of the image->text and text->image
        cross-entropies, averaged.
    """
    image_embeds, text_embeds = check_embeddings(image_embeds, text_embeds)
    logit_scale = check_scalar("logit_scale", logit_scale, positive=True)
    if normalize:
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
    batch = image_embeds.shape[0]
    if gather and process_group_size() > 1:
        all_images = gather_with_grad(image_embeds)  # (W * B, E)
        all_texts = gather_with_grad(text_embeds)  # (W * B, E)
        targets = torch.arange(batch, device=image_embeds.device) + dist.get_rank() * batch
        logits_per_image = logit_scale * image_embeds @ all_texts.T  # (B, W * B)
        logits_per_text = logit_scale * text_embeds @ all_images.T  # (B, W * B)
        return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2
    targets = torch.arange(batch, device=image_embeds.device)
    logits_per_image = logit_scale * image_embeds @ text_embeds.T  # (B, B); its transpose is logits_per_text
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


class ContrastiveLoss(nn.Module):
    """`contrastive_loss` with its logit scale: learnable (CLIP) or fixed.

    The scale is held as its log, ``log_logit_scale = log(1 / temperature)`` (CLIP initialises the temperature at
    0.07), and read as ``exp(log_logit_scale)`` clamped at `max_scale` (CLIP's 100), so a learnable scale stops
    growing there (the clamp passes no gradient above it).

    Args:
        temperature: initial (or fixed) temperature, > 0 and >= 1 / max_scale.
        learnable: a Parameter (True) or a buffer (False, a fixed temperature).
        max_scale: the upper bound of the scale.
        normalize, gather: as in `contrastive_loss`.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        learnable: bool = True,
        max_scale: float = 100.0,
        normalize: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        log_scale = log_scale_from_temperature(temperature, max_scale)
        self.max_scale, self.learnable = float(max_scale), learnable
        self.normalize, self.gather = normalize, gather
        init = torch.tensor(log_scale, dtype=torch.float32)
        if learnable:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale 1 / temperature, a 0-d tensor: ``exp(log_logit_scale)`` clamped at `max_scale`."""
        return self.log_logit_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        """The current temperature, 1 / logit_scale, as a float."""
        return float(1.0 / self.logit_scale.detach())

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B, E), (B, E) -> the loss (0-d tensor)."""
        return contrastive_loss(
            image_embeds, text_embeds, self.logit_scale, normalize=self.normalize, gather=self.gather
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, learnable={self.learnable}, max_scale={self.max_scale:g}"
