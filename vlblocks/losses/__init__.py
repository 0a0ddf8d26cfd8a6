"""Contrastive losses for image-text training: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid loss.

Both gather embeddings across torch.distributed ranks with gradients, so N ranks of batch b train like one
process of batch N x b. Shapes: B batch, E embedding width.
"""

from __future__ import annotations

from vlblocks.losses.contrastive import ContrastiveLoss, contrastive_loss
from vlblocks.losses.siglip import SigLIPLoss, siglip_loss

__all__ = ["ContrastiveLoss", "SigLIPLoss", "contrastive_loss", "siglip_loss"]
