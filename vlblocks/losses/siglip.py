"""SigLIP's pairwise sigmoid loss: every image-text pair is an independent binary classification, exact across ranks.

Follows SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"). For B pairs with (normalised)
embeddings I and T, a logit scale s and a bias b::

    logits = (s * I) @ T^T + b                      # (B, B)
    labels = 2 * eye(B) - 1                         # +1 for the matching pair, -1 for every other
    loss = -sum(log sigmoid(labels * logits)) / B

SigLIP initialises s = 10 (held as log 10) and b = -10, so the many negatives start with a small loss. Under
torch.distributed each rank gathers every rank's text embeddings with gradients and scores its B images against
all W * B texts (the positives sit at columns rank * B + i); the loss stays normalised by the local B. The mean of
the per-rank losses is the single-process loss of the global batch, and with DDP's gradient averaging the gradients
are equal too (open_clip's `SigLipLoss` with any of its exchange schedules computes the same sums).

Shape legend: B local batch, W world size, E embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlblocks._checks import check_finite_number, check_positive_number
from vlblocks.losses.common import (
    check_embeddings,
    check_scalar,
    gather_with_grad,
    process_group_size,
)

__all__ = ["SigLIPLoss", "siglip_loss"]


def siglip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    normalize: bool = True,
    gather: bool = True,
) -> torch.Tensor:
    """SigLIP's sigmoid loss over every (image, text) pair of a batch; pair (i, i) is the positive.

    Args:
        image_embeds: (B, E) image embeddings; row i pairs with row i of `text_embeds`.
        text_embeds: (B, E) text embeddings.
        logit_scale: the scale s (not its log): a positive number or a one-element tensor.
        logit_bias: the bias b: a finite number or a one-element tensor.
        normalize: L2-normalise both embeddings first.
        gather: under torch.distributed, score against every rank's texts (every rank must pass the same B).

    Returns:
        The loss, a 0-d tensor: minus the sum of log sigmoid(label * logit) over the B x (W * B) pairs, over B.
    """
    image_embeds, text_embeds = check_embeddings(image_embeds, text_embeds)
    logit_scale = check_scalar("logit_scale", logit_scale, positive=True)
    logit_bias = check_scalar("logit_bias", logit_bias)
    if normalize:
        image_embeds = F.normalize(image_embeds, dim=-1)
        text_embeds = F.normalize(text_embeds, dim=-1)
    batch, offset = image_embeds.shape[0], 0
    if gather and process_group_size() > 1:
        text_embeds = gather_with_grad(text_embeds)  # (W * B, E)
        offset = dist.get_rank() * batch
    logits = logit_scale * image_embeds @ text_embeds.T + logit_bias  # (B, W * B)
    labels = torch.full_like(logits, -1.0)
    labels.diagonal(offset).fill_(1.0)  # positives: (i, offset + i)
    return -F.logsigmoid(labels * logits).sum() / batch


class SigLIPLoss(nn.Module):
    """`siglip_loss` with its logit scale and bias: learnable (SigLIP: scale 10, bias -10) or fixed.

    The scale is held as its log (``log_logit_scale = log(scale_init)``) and read as its exp clamped at
    `max_scale`; the bias is held as is.

    Args:
        scale_init: initial (or fixed) scale s, in (0, max_scale].
        bias_init: initial (or fixed) bias b.
        learnable: Parameters (True) or buffers (False).
        max_scale: the upper bound of the scale.
        normalize, gather: as in `siglip_loss`.
    """

    def __init__(
        self,
        *,
        scale_init: float = 10.0,
        bias_init: float = -10.0,
        learnable: bool = True,
        max_scale: float = 100.0,
        normalize: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        scale_init = check_positive_number("scale_init", scale_init)
        if scale_init > check_positive_number("max_scale", max_scale):
            raise ValueError(f"scale_init must be <= max_scale = {max_scale!r}, got {scale_init!r}")
        bias = check_finite_number("bias_init", bias_init)
        self.max_scale, self.learnable = float(max_scale), learnable
        self.normalize, self.gather = normalize, gather
        for name, value in (("log_logit_scale", math.log(scale_init)), ("logit_bias", bias)):
            init = torch.tensor(value, dtype=torch.float32)
            if learnable:
                self.register_parameter(name, nn.Parameter(init))
            else:
                self.register_buffer(name, init)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale, a 0-d tensor: ``exp(log_logit_scale)`` clamped at `max_scale`."""
        return self.log_logit_scale.exp().clamp(max=self.max_scale)

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B, E), (B, E) -> the loss (0-d tensor)."""
        return siglip_loss(
            image_embeds,
            text_embeds,
            self.logit_scale,
            self.logit_bias,
            normalize=self.normalize,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        scale = math.exp(float(self.log_logit_scale.detach()))
        return f"scale={scale:.4g}, bias={float(self.logit_bias.detach()):.4g}, learnable={self.learnable}"
