"""Tests of VQAModel with small stub encoders: end to end, masks, gradients, training steps, predict, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlblocks.encoders.output import EncoderOutput
from vlblocks.fusion import CoAttentionFusion, ConcatFusion
from vlblocks.heads import MLPHead
from vlblocks.models import VQAModel

B, T, VOCAB, C = 4, 6, 50, 5


class ImageStub(nn.Module):
    """8x8 patches -> (B, 1 + 16, 48) tokens; first a summary token: learned [CLS] + mean of the patches."""

    def __init__(self, dim: int = 48) -> None:
        super().__init__()
        self.dim = dim
        self.patch = nn.Conv2d(3, dim, kernel_size=8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)  # (B, 16, D)
        tokens = torch.cat([self.cls + x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 17, D)
        return EncoderOutput(tokens=tokens, mask=None, cls=tokens[:, 0])


class TextStub(nn.Module):
    """Embedding + position, returns the attention mask as its own mask unless `return_mask=False`."""

    def __init__(self, dim: int = 32, return_mask: bool = True) -> None:
        super().__init__()
        self.dim, self.return_mask = dim, return_mask
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, T, dim) * 0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        tokens = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]  # (B, T, D)
        mask = attention_mask.bool() if (self.return_mask and attention_mask is not None) else None
        return EncoderOutput(tokens=tokens, mask=mask, cls=tokens[:, 0])


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pixels = torch.randn(B, 3, 32, 32)
    ids = torch.randint(1, VOCAB, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 3:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return pixels, ids, mask


def _model(fusion: str = "coattention", return_mask: bool = True) -> VQAModel:
    if fusion == "coattention":
        fuse = CoAttentionFusion(48, 32, dim=40, heads=2, depth=2)
    else:
        fuse = ConcatFusion(48, 32, dim=32, dropout=0.0)
    head = MLPHead(fuse.out_dim, C, hidden_dim=32)
    return VQAModel(ImageStub(), TextStub(return_mask=return_mask), fuse, head)


@pytest.mark.parametrize("fusion", ["coattention", "concat"])
def test_end_to_end_shapes_and_gradients(fusion: str) -> None:
    model = _model(fusion)
    pixels, ids, mask = _batch()
    logits = model(pixels, ids, mask)
    assert logits.shape == (B, C) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for part in (model.image_encoder, model.text_encoder, model.fusion, model.head):
        for name, p in part.named_parameters():
            if name == "pos" and fusion == "concat":
                # concat reads only token 0, so only pos[:, 0] matters
                assert p.grad[:, 0].abs().sum() > 0
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("return_mask", [True, False])
def test_padding_ids_do_not_change_logits(return_mask: bool) -> None:
    """Whether the encoder returns a mask or not, attention_mask keeps padding out of the fusion."""
    model = _model(return_mask=return_mask).eval()
    pixels, ids, mask = _batch()
    ids2 = ids.clone()
    ids2[mask == 0] = torch.randint(1, VOCAB, (int((mask == 0).sum()),))
    torch.testing.assert_close(model(pixels, ids2, mask), model(pixels, ids, mask), atol=1e-6, rtol=0)
    assert not torch.allclose(model(pixels, ids2), model(pixels, ids), atol=1e-4)  # no mask: padding leaks


def test_training_steps_reduce_the_loss() -> None:
    model = _model()
    pixels, ids, mask = _batch()
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(pixels, ids, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_predict_returns_indices_and_restores_mode() -> None:
    model = _model().train()
    pixels, ids, mask = _batch()
    pred = model.predict(pixels, ids, mask)
    assert pred.shape == (B,) and pred.dtype == torch.long and not pred.requires_grad
    assert model.training
    model.eval()
    torch.testing.assert_close(pred, model(pixels, ids, mask).argmax(-1))


def test_errors() -> None:
    fusion = ConcatFusion(48, 32, dim=32)
    with pytest.raises(TypeError, match="text_encoder must be an nn.Module, got function"):
        VQAModel(ImageStub(), lambda x: x, fusion, MLPHead(32, C))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"head.dim must equal fusion.out_dim \(32\), got 16"):
        VQAModel(ImageStub(), TextStub(), fusion, MLPHead(16, C))

    class Bad(nn.Module):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return pixel_values

    pixels, ids, mask = _batch()
    with pytest.raises(TypeError, match="image_encoder must return an EncoderOutput, got Tensor"):
        VQAModel(Bad(), TextStub(), fusion, MLPHead(32, C))(pixels, ids, mask)
    model = _model("concat")
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 3, H, W\), got \(3, 32, 32\)"):
        model(pixels[0], ids, mask)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\), got \(6,\)"):
        model(pixels, ids[0], mask)
    with pytest.raises(
        ValueError, match=r"attention_mask must have the shape of input_ids \(4, 6\), got \(4, 5\)"
    ):
        model(pixels, ids, mask[:, :5])


@pytest.mark.parametrize("fusion", ["coattention", "concat"])
def test_image_index_encodes_each_image_once_and_matches_repeated_images(fusion: str) -> None:
    model = _model(fusion).eval()
    pixels, ids, mask = _batch()
    distinct = pixels[:2]  # two images, four questions: 0, 1, 1, 0
    index = torch.tensor([0, 1, 1, 0])
    calls, fused_rows = [], []
    model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model.fusion.register_forward_hook(lambda m, i, o: fused_rows.append(i[0].shape[0]))
    grouped = model(distinct, ids, mask, image_index=index)
    repeated = model(distinct[index], ids, mask)
    torch.testing.assert_close(grouped, repeated)
    assert calls == [2, 4]
    # co-attention takes image_index and gets the 2 distinct images' tokens; concat gets them per question
    assert fused_rows == ([2, 4] if fusion == "coattention" else [4, 4])
    with pytest.raises(ValueError, match=r"image_index must have shape \(4,\)"):
        model(distinct, ids, mask, image_index=torch.tensor([0, 1]))


@pytest.mark.parametrize(("index", "bad"), [([0, 1, 1, -1], -1), ([0, 1, 2, 0], 2)])
def test_image_index_outside_the_images_is_refused(index: list[int], bad: int) -> None:
    """Regression (issue 7 item 10): image_index=-1 silently used the last image."""
    model = _model().eval()
    pixels, ids, mask = _batch()
    with pytest.raises(ValueError, match=rf"image_index must lie in \[0, 2\) \(one of the 2 images\), got {bad}"):
        model(pixels[:2], ids, mask, image_index=torch.tensor(index))
    model(pixels[:2], ids, mask, image_index=torch.tensor([0, 1, 1, 0]))  # control: valid indices run
    with pytest.raises(TypeError, match="image_index must be an integer tensor"):
        model(pixels[:2], ids, mask, image_index=torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_ask_vqa_checks_its_arguments():
    from pathlib import Path

    from vlblocks.models import LoadedRun, ask_vqa

    other = LoadedRun("retrieval", torch.nn.Linear(1, 1), {}, Path("."))
    with pytest.raises(TypeError, match="run must be a LoadedRun of task 'vqa'"):
        ask_vqa(other, "x.png", "what?")
    vqa = LoadedRun("vqa", torch.nn.Linear(1, 1), {"model": {}}, Path("."))
    with pytest.raises(ValueError, match="question"):
        ask_vqa(vqa, "x.png", "  ")
    with pytest.raises(ValueError, match="top_k"):
        ask_vqa(vqa, "x.png", "what?", top_k=0)
