"""Batch image augmentation on tensors (uint8 or float), drawn from torch's global RNG.

Shapes: B images, C channels, H x W pixels.
"""

from __future__ import annotations

import torch

from vlblocks._checks import check_tensor

__all__ = ["random_flips"]


def random_flips(images: torch.Tensor) -> torch.Tensor:
    """Each image of (B, C, H, W) flipped left-right with probability 1/2, then upside down with probability 1/2
    (two draws of ``torch.rand(B)``, horizontal first). Flips keep the image centre where it was, so a label that
    depends on what lies at the centre stays true."""
    check_tensor("images", images, ndim=4, nonempty=False)
    b = images.shape[0]
    flip_h, flip_v = torch.rand(b) < 0.5, torch.rand(b) < 0.5  # (B,) each
    images = torch.where(flip_h.view(b, 1, 1, 1), images.flip(-1), images)
    return torch.where(flip_v.view(b, 1, 1, 1), images.flip(-2), images)
