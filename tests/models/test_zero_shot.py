"""Tests of ZeroShotClassifier: HF CLIPModel parity on one template (HF model and DualEncoder.from_pretrained), the
prompt ensemble and per-template logits by hand, per-template accuracy, refresh, and the documented errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlblocks.data.tokenizer import build_word_tokenizer
from vlblocks.encoders import ImageEncoder, TextEncoder
from vlblocks.models import DualEncoder, ZeroShotClassifier, ZeroShotResult

CLASSES = ["red circle", "blue square", "green triangle"]
TEMPLATES = ["a photo of a {}", "this is not a photo of a {}", "no {} , no score ."]


def _tiny_dual_encoder() -> DualEncoder:
    tokenizer = build_word_tokenizer([t.replace("{}", c) for t in TEMPLATES for c in CLASSES])
    image = ImageEncoder.tiny("cnn", image_size=32, dim=32, patch_size=8)
    text = TextEncoder.tiny("bert", tokenizer=tokenizer, dim=32, depth=1, heads=2)
    return DualEncoder(image, text, embed_dim=16).eval()


def test_single_template_equals_hf_logits_per_image(tiny_clip_folder: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    hf = CLIPModel.from_pretrained(tiny_clip_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_folder)
    pixels = torch.randn(5, 3, 32, 32)
    prompts = [f"a photo of a {c}" for c in CLASSES]
    with torch.no_grad():
        ref = hf(
            pixel_values=pixels, **tokenizer(prompts, padding=True, return_tensors="pt")
        ).logits_per_image
        for model in (hf, DualEncoder.from_pretrained(tiny_clip_folder).eval()):
            clf = ZeroShotClassifier(model, CLASSES, templates=["a photo of a {}"], tokenizer=tokenizer)
            torch.testing.assert_close(clf(pixels), ref, atol=1e-5, rtol=1e-5)
        # control: another template gives other logits
        other = ZeroShotClassifier(hf, CLASSES, templates=["no {} , no score ."], tokenizer=tokenizer)
        assert not torch.allclose(other(pixels), ref, atol=1e-3)


def test_ensemble_is_the_normalised_mean_of_template_embeddings() -> None:
    model = _tiny_dual_encoder()
    clf = ZeroShotClassifier(model, CLASSES, templates=TEMPLATES)  # tokenizer: the model's
    with torch.no_grad():
        per_template = []
        for template in TEMPLATES:
            enc = model.tokenizer(
                [template.replace("{}", c) for c in CLASSES], padding=True, return_tensors="pt"
            )
            per_template.append(model.encode_text(enc["input_ids"], enc["attention_mask"]))
        expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)
        torch.testing.assert_close(clf.template_embeds, torch.stack(per_template))
        torch.testing.assert_close(clf.class_embeds, expected)
        pixels = torch.randn(4, 3, 32, 32)
        images = model.encode_image(pixels)
        torch.testing.assert_close(clf(pixels), model.logit_scale * images @ expected.T)
        slices = clf.logits_per_template(pixels)
        assert slices.shape == (3, 4, 3)
        for p in range(3):
            torch.testing.assert_close(slices[p], model.logit_scale * images @ per_template[p].T)
        assert not torch.allclose(slices[0], slices[1])  # control: the templates differ


def test_evaluate_reports_ensemble_and_per_template_accuracy() -> None:
    model = _tiny_dual_encoder()
    clf = ZeroShotClassifier(model, CLASSES, templates=TEMPLATES)
    pixels = torch.randn(12, 3, 32, 32)
    with torch.no_grad():
        slices = clf.logits_per_template(pixels)
        labels = slices[0].argmax(-1)  # template 0 is right on every image by construction
        ensemble = clf(pixels).argmax(-1)
    result = clf.evaluate([(pixels[:5], labels[:5]), (pixels[5:], labels[5:])])
    assert isinstance(result, ZeroShotResult)
    assert list(result.per_template) == TEMPLATES
    assert result.per_template[TEMPLATES[0]] == 1.0
    for p, template in enumerate(TEMPLATES):
        assert result.per_template[template] == pytest.approx(
            float((slices[p].argmax(-1) == labels).double().mean())
        )
    assert result.accuracy == pytest.approx(float((ensemble == labels).double().mean()))
    assert torch.equal(result.predictions, ensemble) and torch.equal(result.labels, labels)
    # control: shifted labels make the perfect template always wrong
    shifted = clf.evaluate([(pixels, (labels + 1) % 3)])
    assert shifted.per_template[TEMPLATES[0]] == 0.0


def test_refresh_follows_new_weights() -> None:
    model = _tiny_dual_encoder()
    clf = ZeroShotClassifier(model, CLASSES, templates=TEMPLATES[:1])
    before = clf.class_embeds.clone()
    with torch.no_grad():
        model.text_projection.weight.add_(torch.randn_like(model.text_projection.weight))
    assert torch.equal(clf.class_embeds, before)  # cached until refresh()
    clf.refresh()
    assert not torch.allclose(clf.class_embeds, before)


def test_errors(tiny_clip_folder: Path) -> None:
    from transformers import CLIPModel

    model = _tiny_dual_encoder()
    with pytest.raises(ValueError, match="class_names must hold at least one class name"):
        ZeroShotClassifier(model, [], templates=TEMPLATES)
    with pytest.raises(ValueError, match="templates must hold at least one template"):
        ZeroShotClassifier(model, CLASSES, templates=[])
    with pytest.raises(ValueError, match="must each contain '\\{\\}' exactly once, got 'a photo'"):
        ZeroShotClassifier(model, CLASSES, templates=["a photo"])
    with pytest.raises(ValueError, match="exactly once"):
        ZeroShotClassifier(model, CLASSES, templates=["{} and {}"])
    with pytest.raises(ValueError, match="class_names must be distinct, got 'red circle'"):
        ZeroShotClassifier(model, ["red circle", "red circle"])
    with pytest.raises(TypeError, match="class_names must be a list of str"):
        ZeroShotClassifier(model, "red circle")
    with pytest.raises(ValueError, match="tokenizer must be given"):
        ZeroShotClassifier(CLIPModel.from_pretrained(tiny_clip_folder), CLASSES)
    with pytest.raises(TypeError, match="model must be a DualEncoder or an HF CLIPModel"):
        ZeroShotClassifier(model.image_encoder, CLASSES, tokenizer=model.tokenizer)
    clf = ZeroShotClassifier(model, CLASSES)
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        clf.evaluate([(pixels, torch.tensor([0, 3]))])
    with pytest.raises(ValueError, match="labels must have one class per image"):
        clf.evaluate([(pixels, torch.tensor([0]))])
    with pytest.raises(ValueError, match="batches must yield at least one"):
        clf.evaluate([])
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 3, H, W\)"):
        clf(pixels[0])
