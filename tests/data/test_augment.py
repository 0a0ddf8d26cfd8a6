"""random_flips: every image comes out as one of its four flips, each combination drawn, from the global RNG."""

from __future__ import annotations

import pytest
import torch

from vlblocks.data.augment import random_flips


def test_each_image_is_one_of_its_flips_and_all_occur() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    out = random_flips(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    seen = set()
    for x, y in zip(images, out):
        variants = {
            (False, False): x,
            (True, False): x.flip(-1),
            (False, True): x.flip(-2),
            (True, True): x.flip(-1).flip(-2),
        }
        matches = [k for k, v in variants.items() if torch.equal(v, y)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 4


def test_the_draws_are_horizontal_then_vertical_from_the_global_rng() -> None:
    images = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).view(4, 2, 3, 3)
    torch.manual_seed(5)
    out = random_flips(images)
    torch.manual_seed(5)
    h, v = torch.rand(4) < 0.5, torch.rand(4) < 0.5
    for i in range(4):
        x = images[i].flip(-1) if h[i] else images[i]
        assert torch.equal(out[i], x.flip(-2) if v[i] else x)


def test_a_batch_of_images_is_required() -> None:
    with pytest.raises((TypeError, ValueError)):
        random_flips(torch.zeros(3, 4, 4))
