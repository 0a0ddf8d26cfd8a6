"""CLIPScore / RefCLIPScore: golden values, HF CLIPModel parity (tiny random model from disk), any dual encoder."""

from __future__ import annotations

import json
import math
import string

import pytest
import torch
from PIL import Image

from vlblocks.metrics.clipscore import clip_model_score, clip_score, encoder_clip_score, ref_clip_score


def test_clip_score_golden():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    txt = torch.tensor([[1.0, 1.0], [-1.0, 0.2], [0.0, 0.5]])
    out = clip_score(img, txt)
    expected = [2.5 / math.sqrt(2), 0.0, 2.5]  # negative cosine clipped to 0; scale does not matter
    assert out.per_caption.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.score == pytest.approx(sum(expected) / 3, abs=1e-9)
    assert clip_score(img, txt, w=1.0).per_caption[0].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_ref_clip_score_golden_and_ragged_refs():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    refs = torch.tensor([[[1.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [-1.0, -1.0]]])  # (B, R, D)
    out = ref_clip_score(img, txt, refs)
    c0, r0 = 2.5 / math.sqrt(2), 1.0
    assert out.per_caption_ref[0].item() == pytest.approx(2 * c0 * r0 / (c0 + r0), abs=1e-6)
    assert out.per_caption_ref[1].item() == pytest.approx(0.0, abs=1e-9)  # best reference cosine 0 -> 0
    ragged = ref_clip_score(img, txt, [refs[0], refs[1][:1]])
    assert torch.allclose(ragged.per_caption_ref, out.per_caption_ref)
    other = ref_clip_score(img, txt, torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    assert other.per_caption_ref[0] != out.per_caption_ref[0]  # control: the references count


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = tmp_path_factory.mktemp("tiny_clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,'!?-":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    CLIPProcessor(image_processor=improc, tokenizer=tok).save_pretrained(path)
    return CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)


def _images(n: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(1)
    return [Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def _direct(model, processor, images, texts):
    with torch.no_grad():
        pix = processor(images=images, return_tensors="pt")["pixel_values"]
        tok = processor.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        i, t = model.get_image_features(pixel_values=pix), model.get_text_features(**tok)
    i = i if isinstance(i, torch.Tensor) else i.pooler_output
    t = t if isinstance(t, torch.Tensor) else t.pooler_output
    return torch.nn.functional.cosine_similarity(i, t, dim=-1)


def test_clip_model_score_equals_hf_features(tiny_clip):
    model, processor = tiny_clip
    images = _images(3)
    captions = ["a dog on a mat.", "two cats", "a very long caption " * 10]  # the last one needs truncation
    out = clip_model_score(model, processor, images, captions, batch_size=2)
    cos = _direct(model, processor, images, ["A photo depicts " + c for c in captions])
    torch.testing.assert_close(out.per_caption, 2.5 * cos.clamp(min=0), atol=1e-5, rtol=0)
    changed = clip_model_score(model, processor, images, ["a red ball", *captions[1:]])
    assert abs(changed.per_caption[0] - out.per_caption[0]) > 1e-4  # control: the caption counts
    torch.testing.assert_close(changed.per_caption[1:], out.per_caption[1:], atol=1e-5, rtol=0)


def test_clip_model_ref_score_equals_hf_features(tiny_clip):
    model, processor = tiny_clip
    images, captions = _images(2), ["a dog", "a cat"]
    refs = [["a dog on grass", "the dog"], ["a cat"]]
    out = clip_model_score(model, processor, images, captions, references=refs)
    c = 2.5 * _direct(model, processor, images, ["A photo depicts " + x for x in captions]).clamp(min=0)
    best = []
    for b, rs in enumerate(refs):
        tok = processor.tokenizer(
            ["A photo depicts " + x for x in [captions[b], *rs]], padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            e = model.get_text_features(**tok)
        e = torch.nn.functional.normalize(e if isinstance(e, torch.Tensor) else e.pooler_output, dim=-1)
        best.append((e[1:] @ e[0]).max().clamp(min=0))
    r = torch.stack(best)
    torch.testing.assert_close(out.per_caption_ref, 2 * c * r / (c + r), atol=1e-5, rtol=0)


class _DualEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Linear(12, 8)
        self.text = torch.nn.Embedding(20, 8)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x.flatten(1))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids).mean(1)


def test_encoder_clip_score_equals_clip_score_on_its_embeddings():
    model = _DualEncoder()
    images, texts = torch.randn(3, 3, 2, 2), torch.randint(0, 20, (3, 5))
    refs = torch.randint(0, 20, (6, 5))
    out = encoder_clip_score(model, images, texts, ref_texts=refs, refs_per_caption=2)
    with torch.no_grad():
        direct = ref_clip_score(
            model.encode_image(images), model.encode_text(texts), model.encode_text(refs).reshape(3, 2, 8)
        )
    torch.testing.assert_close(out.per_caption, direct.per_caption)
    torch.testing.assert_close(out.per_caption_ref, direct.per_caption_ref)
    assert encoder_clip_score(model, images, texts).ref_score is None


def test_errors():
    a = torch.randn(2, 4)
    with pytest.raises(ValueError, match="same shape"):
        clip_score(a, torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"image_embeds must have shape \(B, D\)"):
        clip_score(torch.randn(4), a)
    with pytest.raises(ValueError, match="w must be a finite positive number"):
        clip_score(a, a, w=0)
    with pytest.raises(ValueError, match="image_embeds must hold at least one item"):
        clip_score(torch.randn(0, 4), torch.randn(0, 4))
    with pytest.raises(ValueError, match="ref_embeds must hold references for B=2"):
        ref_clip_score(a, a, torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match=r"ref_embeds\[0\] must have width D=4"):
        ref_clip_score(a, a, [torch.randn(1, 5), torch.randn(1, 4)])
    with pytest.raises(TypeError, match="model must have an encode_image method"):
        encoder_clip_score(object(), a, a)
    with pytest.raises(ValueError, match="ref_texts must encode to B \\* R = 6 rows"):
        encoder_clip_score(
            _DualEncoder(),
            torch.randn(3, 12),
            torch.randint(0, 20, (3, 2)),
            ref_texts=torch.randint(0, 20, (5, 2)),
            refs_per_caption=2,
        )


def test_model_errors(tiny_clip):
    model, processor = tiny_clip
    with pytest.raises(ValueError, match="images and captions must be non-empty and of equal length"):
        clip_model_score(model, processor, _images(2), ["a"])
    with pytest.raises(ValueError, match="references must hold a non-empty list"):
        clip_model_score(model, processor, _images(1), ["a"], references=[[]])
