"""Tests of contrastive_loss / ContrastiveLoss: golden values, open_clip ClipLoss parity (loss and gradients),
the learnable / fixed / clamped logit scale, and the documented errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from vlblocks.losses import ContrastiveLoss, contrastive_loss

B, E = 6, 16


def _embeds(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(B, E, generator=g, dtype=dtype).requires_grad_()
    text = torch.randn(B, E, generator=g, dtype=dtype).requires_grad_()
    return image, text


def test_golden_value_on_orthonormal_pairs() -> None:
    # image i = text i = e_i: logits = s * eye, so each cross-entropy is log(1 + (B - 1) exp(-s))
    eye = torch.eye(B)
    for scale in (1.0, 5.0):
        loss = contrastive_loss(eye, eye, scale)
        torch.testing.assert_close(loss, torch.tensor(math.log(1 + (B - 1) * math.exp(-scale))))


def test_handwritten_symmetric_cross_entropy() -> None:
    image, text = _embeds()
    i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = 3.0 * i @ t.T
    by_hand = (-logits.log_softmax(1).diagonal().mean() - logits.log_softmax(0).diagonal().mean()) / 2
    torch.testing.assert_close(contrastive_loss(image, text, 3.0), by_hand)
    # control: shuffling the texts breaks the pairs and changes the loss
    assert not torch.allclose(contrastive_loss(image, text.flip(0), 3.0), by_hand)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_with_open_clip_loss_and_gradients(dtype: torch.dtype) -> None:
    ours_img, ours_txt = _embeds(dtype)
    ref_img, ref_txt = (x.detach().clone().requires_grad_() for x in (ours_img, ours_txt))
    ours_scale = torch.tensor(math.log(1 / 0.07), dtype=dtype, requires_grad=True)
    ref_scale = ours_scale.detach().clone().requires_grad_()

    ours = contrastive_loss(ours_img, ours_txt, ours_scale.exp())
    ref = ClipLoss()(F.normalize(ref_img, dim=-1), F.normalize(ref_txt, dim=-1), ref_scale.exp())
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    for a, b in ((ours_img, ref_img), (ours_txt, ref_txt), (ours_scale, ref_scale)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)
    assert ours_img.grad.abs().sum() > 0 and ours_scale.grad.abs() > 0


def test_normalize_false_takes_embeddings_as_they_are() -> None:
    image, text = _embeds()
    i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    torch.testing.assert_close(
        contrastive_loss(i, t, 2.0, normalize=False), contrastive_loss(image, text, 2.0)
    )
    # control: unnormalised inputs without normalisation give another loss
    assert not torch.allclose(
        contrastive_loss(image, text, 2.0, normalize=False), contrastive_loss(image, text, 2.0)
    )


def test_gather_without_process_group_is_the_plain_loss() -> None:
    image, text = _embeds()
    torch.testing.assert_close(
        contrastive_loss(image, text, 2.0, gather=True), contrastive_loss(image, text, 2.0, gather=False)
    )


def test_module_learnable_scale_starts_at_one_over_temperature_and_gets_a_gradient() -> None:
    loss_fn = ContrastiveLoss()
    torch.testing.assert_close(loss_fn.logit_scale, torch.tensor(1 / 0.07))
    assert loss_fn.temperature == pytest.approx(0.07)
    assert [name for name, _ in loss_fn.named_parameters()] == ["log_logit_scale"]
    image, text = _embeds()
    loss = loss_fn(image, text)
    torch.testing.assert_close(loss, contrastive_loss(image, text, 1 / 0.07))
    loss.backward()
    assert loss_fn.log_logit_scale.grad is not None and loss_fn.log_logit_scale.grad.abs() > 0


def test_module_fixed_scale_is_a_buffer() -> None:
    loss_fn = ContrastiveLoss(temperature=0.5, learnable=False)
    assert list(loss_fn.parameters()) == []
    assert "log_logit_scale" in loss_fn.state_dict()
    image, text = _embeds()
    torch.testing.assert_close(loss_fn(image, text), contrastive_loss(image, text, 2.0))


def test_module_scale_is_clamped_at_max_scale() -> None:
    loss_fn = ContrastiveLoss()
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(250.0))
    torch.testing.assert_close(loss_fn.logit_scale, torch.tensor(100.0))
    image, text = _embeds()
    loss_fn(image, text).backward()
    assert loss_fn.log_logit_scale.grad == 0  # no gradient pushes it further above the clamp
    # control: below the clamp the scale does get a gradient
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(50.0))
    loss_fn.log_logit_scale.grad = None
    loss_fn(image, text).backward()
    assert loss_fn.log_logit_scale.grad != 0


def test_errors() -> None:
    image, text = _embeds()
    with pytest.raises(ValueError, match="same number of pairs"):
        contrastive_loss(image, text[:-1], 1.0)
    with pytest.raises(ValueError, match="same width E"):
        contrastive_loss(image, text[:, :-1], 1.0)
    with pytest.raises(ValueError, match=r"image_embeds must have shape \(B, E\)"):
        contrastive_loss(image[None], text, 1.0)
    with pytest.raises(ValueError, match=r"text_embeds must have shape \(B, E\)"):
        contrastive_loss(image, text[0], 1.0)
    with pytest.raises(ValueError, match="empty batch"):
        contrastive_loss(image[:0], text[:0], 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        contrastive_loss(image.long(), text, 1.0)
    with pytest.raises(ValueError, match="logit_scale must be a finite positive number"):
        contrastive_loss(image, text, 0.0)
    with pytest.raises(ValueError, match="one-element tensor"):
        contrastive_loss(image, text, torch.ones(2))
    with pytest.raises(ValueError, match="temperature must be a finite positive number"):
        ContrastiveLoss(temperature=-0.1)
    with pytest.raises(ValueError, match="temperature must be >= 1 / max_scale"):
        ContrastiveLoss(temperature=0.001)
