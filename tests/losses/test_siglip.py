"""Tests of siglip_loss / SigLIPLoss: golden values, open_clip SigLipLoss parity (loss and gradients), the
initial scale and bias, and the documented errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from vlblocks.losses import SigLIPLoss, siglip_loss

B, E = 6, 16


def _embeds(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    image = torch.randn(B, E, generator=g, dtype=dtype).requires_grad_()
    text = torch.randn(B, E, generator=g, dtype=dtype).requires_grad_()
    return image, text


def test_golden_value_on_orthonormal_pairs() -> None:
    # logits = s * eye + b: B positives at s + b, B (B - 1) negatives at b
    eye = torch.eye(B)
    s, b = 4.0, -2.0
    expected = -F.logsigmoid(torch.tensor(s + b)) - (B - 1) * F.logsigmoid(torch.tensor(-b))
    torch.testing.assert_close(siglip_loss(eye, eye, s, b), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_with_open_clip_loss_and_gradients(dtype: torch.dtype) -> None:
    ours_img, ours_txt = _embeds(dtype)
    ref_img, ref_txt = (x.detach().clone().requires_grad_() for x in (ours_img, ours_txt))
    ours_scale = torch.tensor(math.log(10.0), dtype=dtype, requires_grad=True)
    ours_bias = torch.tensor(-10.0, dtype=dtype, requires_grad=True)
    ref_scale, ref_bias = (x.detach().clone().requires_grad_() for x in (ours_scale, ours_bias))

    ours = siglip_loss(ours_img, ours_txt, ours_scale.exp(), ours_bias)
    ref = SigLipLoss()(F.normalize(ref_img, dim=-1), F.normalize(ref_txt, dim=-1), ref_scale.exp(), ref_bias)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    for a, b in ((ours_img, ref_img), (ours_txt, ref_txt), (ours_scale, ref_scale), (ours_bias, ref_bias)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)
    assert ours_img.grad.abs().sum() > 0 and ours_bias.grad.abs() > 0


def test_pairs_matter() -> None:
    image, text = _embeds()
    # control: with a large scale and a moderate bias, matched pairs score lower than shuffled ones
    assert siglip_loss(image, image, 10.0, -5.0) < siglip_loss(image, text, 10.0, -5.0)
    assert not torch.allclose(
        siglip_loss(image, text, 10.0, -5.0), siglip_loss(image, text.flip(0), 10.0, -5.0)
    )


def test_module_initial_scale_and_bias_and_gradients() -> None:
    loss_fn = SigLIPLoss()
    torch.testing.assert_close(loss_fn.logit_scale, torch.tensor(10.0))
    torch.testing.assert_close(loss_fn.log_logit_scale.detach(), torch.tensor(math.log(10.0)))
    torch.testing.assert_close(loss_fn.logit_bias.detach(), torch.tensor(-10.0))
    image, text = _embeds()
    loss = loss_fn(image, text)
    torch.testing.assert_close(loss, siglip_loss(image, text, 10.0, -10.0))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in loss_fn.parameters())
    assert len(list(loss_fn.parameters())) == 2


def test_module_fixed_scale_and_bias_are_buffers() -> None:
    loss_fn = SigLIPLoss(scale_init=5.0, bias_init=-1.0, learnable=False)
    assert list(loss_fn.parameters()) == []
    assert set(loss_fn.state_dict()) == {"log_logit_scale", "logit_bias"}
    image, text = _embeds()
    torch.testing.assert_close(loss_fn(image, text), siglip_loss(image, text, 5.0, -1.0))


def test_errors() -> None:
    image, text = _embeds()
    with pytest.raises(ValueError, match="same number of pairs"):
        siglip_loss(image, text[:-1], 1.0, 0.0)
    with pytest.raises(ValueError, match=r"image_embeds must have shape \(B, E\)"):
        siglip_loss(image[:, :, None], text, 1.0, 0.0)
    with pytest.raises(ValueError, match="logit_bias must be a finite number"):
        siglip_loss(image, text, 1.0, float("nan"))
    with pytest.raises(ValueError, match="logit_scale must be a finite positive number"):
        siglip_loss(image, text, -1.0, 0.0)
    with pytest.raises(ValueError, match="scale_init must be <= max_scale"):
        SigLIPLoss(scale_init=200.0)
    with pytest.raises(ValueError, match="bias_init must be a finite number"):
        SigLIPLoss(bias_init=float("inf"))
