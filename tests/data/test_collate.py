"""VQACollator: shapes / dtypes, normalisation, resizing PIL and tensors, labels and scores, skipped items;
to_pixel_values against the formula written out by hand."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlblocks.data import AnswerVocab, ShapesWorld, VQACollator, VQAv2Dataset, build_word_tokenizer
from vlblocks.data.collate import image_to_uint8, stack_images, to_pixel_values
from vlblocks.encoders import ImageConfig

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def setup():
    world = ShapesWorld("train", num_scenes=12, image_size=32)
    vqa = world.vqa()
    tokenizer = build_word_tokenizer([item["question"] for item in vqa])
    vocab = AnswerVocab.build(vqa.answers(), top_k=8)
    return world, vqa, tokenizer, vocab


def make(setup, *, image_size: int = 32, **kwargs) -> VQACollator:
    _, _, tokenizer, vocab = setup
    return VQACollator(tokenizer, vocab, image_config=ImageConfig(image_size, MEAN, STD), **kwargs)


def test_batch_shapes_dtypes_and_normalisation(setup) -> None:
    _, vqa, tokenizer, vocab = setup
    items = [vqa[k] for k in range(4)]
    batch = make(setup)(items)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    expected = (items[2]["image"].float() / 255 - mean) / std
    assert torch.allclose(batch["pixel_values"][2], expected, atol=1e-6)
    assert (
        batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["attention_mask"].shape
    )
    assert batch["input_ids"].shape[0] == 4 and (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert (
        batch["input_ids"][1].tolist()[: int(batch["attention_mask"][1].sum())]
        == tokenizer(items[1]["question"])["input_ids"]
    )
    assert batch["labels"].dtype == torch.long and batch["scores"].shape == (4, len(vocab))
    for k, item in enumerate(items):
        label = vocab.encode(item["answer"])
        assert batch["labels"][k].item() == (label if label >= 0 else -100)
        assert torch.equal(batch["scores"][k], vocab.soft_scores(item["answers"]))
    assert batch["question"] == [i["question"] for i in items] and batch["question_id"] == [
        i["question_id"] for i in items
    ]
    assert batch["image_id"] == [i["image_id"] for i in items] and batch["answers"][0] == items[0]["answers"]
    assert batch["question_type"] == [i["question_type"] for i in items]


def test_labels_outside_the_vocab_are_ignored(setup) -> None:
    _, vqa, _, vocab = setup
    items = [dict(vqa[0], answer="giraffe", answers=["giraffe"] * 10), vqa[1]]
    batch = make(setup)(items)
    assert batch["labels"][0] == -100 and batch["scores"][0].sum() == 0


def test_pil_and_tensor_images_resize_alike(setup) -> None:
    world, vqa, _, _ = setup
    tensor_item = vqa[0]
    pil_item = dict(tensor_item, image=Image.fromarray(tensor_item["image"].permute(1, 2, 0).numpy()))
    same = make(setup)([tensor_item, pil_item])
    assert torch.allclose(same["pixel_values"][0], same["pixel_values"][1])  # same size: no resampling at all
    big = make(setup, image_size=48)([tensor_item, pil_item])
    assert big["pixel_values"].shape == (2, 3, 48, 48)
    diff = (big["pixel_values"][0] - big["pixel_values"][1]).abs() * torch.tensor(STD).view(3, 1, 1) * 255
    assert diff.mean() < 3  # torch antialiased bilinear vs PIL bilinear: a few grey levels apart
    assert image_to_uint8(Image.new("L", (10, 20)), 16).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="uint8"):
        image_to_uint8(torch.zeros(3, 8, 8), 8)
    with pytest.raises(TypeError, match="PIL image"):
        image_to_uint8([1, 2, 3], 8)


def test_augment_jitters_colours_but_never_flips(setup) -> None:
    _, vqa, _, _ = setup
    items = [vqa[k] for k in range(4)]
    plain, jittered = make(setup)(items)["pixel_values"], make(setup, augment=True)(items)["pixel_values"]
    assert not torch.allclose(plain, jittered)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert ((plain - jittered) * std).abs().max() < 0.25  # small
    for k in range(4):  # an affine change of intensities per image: pixels stay in place (no flip, no crop)
        a, b = plain[k].flatten(), jittered[k].flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.98


def test_none_items_are_skipped_and_counted(setup) -> None:
    _, vqa, _, _ = setup
    collator = make(setup)
    with pytest.warns(UserWarning, match="skipped 2 unreadable item"):
        batch = collator([None, vqa[0], None, vqa[1]])
    assert batch["pixel_values"].shape[0] == 2 and collator.skipped == 2
    with pytest.warns(UserWarning, match="3 so far"):
        assert collator([None]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collator([vqa[2]])  # no warning without skipped items


def test_unreadable_image_on_disk_is_skipped(setup, tmp_path: Path) -> None:
    world, _, _, _ = setup
    export = world.export(tmp_path)
    (export.image_dir / world.file_name(0)).write_bytes(b"not a png at all")
    dataset = VQAv2Dataset(
        export.questions_json, export.annotations_json, export.image_dir, image_name=export.image_name
    )
    assert len(dataset) == 60 and dataset[0] is None and dataset[5] is not None
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=make(setup))
    with pytest.warns(UserWarning, match="skipped 5 unreadable"):
        batches = list(loader)
    assert sum(b["pixel_values"].shape[0] for b in batches if b is not None) == 55
    assert batches[0]["pixel_values"].shape == (3, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_length": 1}, ValueError, "max_length"),
        ({"max_length": 8.0}, TypeError, "max_length"),
        ({"vocab": ["yes"]}, TypeError, "vocab"),
        ({"image_config": None}, TypeError, "image_config is required"),
        ({"image_config": (32, MEAN, STD)}, TypeError, "image_config must be an ImageConfig"),
        ({"image_size": 32}, TypeError, "not both"),
    ],
)
def test_errors(setup, kwargs: dict, error: type, match: str) -> None:
    _, _, tokenizer, vocab = setup
    args = {"image_config": ImageConfig(32, MEAN, STD), **kwargs}
    with pytest.raises(error, match=match):
        VQACollator(tokenizer, args.pop("vocab", vocab), **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": 0}, ValueError, "image_size"),
        ({"mean": (0.5, 0.5)}, ValueError, "mean"),
        ({"std": (0.5, 0.0, 0.5)}, ValueError, "std"),
    ],
)
def test_deprecated_keywords_warn_and_still_check(setup, kwargs: dict, error: type, match: str) -> None:
    _, vqa, tokenizer, vocab = setup
    with pytest.warns(DeprecationWarning, match="image_config"):
        old = VQACollator(tokenizer, vocab, image_size=32, mean=MEAN, std=STD)
    items = [vqa[k] for k in range(3)]
    assert torch.equal(old(items)["pixel_values"], make(setup)(items)["pixel_values"])
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        VQACollator(tokenizer, vocab, **{"image_size": 32, "mean": MEAN, "std": STD, **kwargs})


def test_group_images_stacks_each_image_once(setup) -> None:
    _, vqa, _, _ = setup
    items = [vqa[k] for k in range(12)]  # 5 questions per scene: scenes 0, 1 and part of 2
    plain = make(setup)(items)
    grouped = make(setup, group_images=True)(items)
    ids = [item["image_id"] for item in items]
    assert grouped["pixel_values"].shape[0] == len(set(ids)) < len(items)
    torch.testing.assert_close(grouped["pixel_values"][grouped["image_index"]], plain["pixel_values"])
    for key in ("input_ids", "labels", "scores"):
        assert torch.equal(grouped[key], plain[key])


def test_to_pixel_values_resizes_and_normalises_per_channel() -> None:
    config = ImageConfig(4, MEAN, STD)
    flat = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4).contiguous()
    pil = Image.new("RGB", (9, 5), (255, 0, 102))  # another size: resized to 4 x 4
    out = to_pixel_values([flat, pil], config)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    # written out by hand: (value / 255 - mean) / std, channel by channel
    by_hand = [
        [(0 - 0.5) / 0.2, (0.2 - 0.4) / 0.25, (1 - 0.3) / 0.3],
        [(1 - 0.5) / 0.2, (0 - 0.4) / 0.25, (0.4 - 0.3) / 0.3],
    ]
    assert torch.allclose(out, torch.tensor(by_hand).view(2, 3, 1, 1).expand(2, 3, 4, 4), atol=1e-6)
    # the same pixels as stacking, scaling and normalising by hand (also for a real image resized 32 -> 48)
    image = ShapesWorld("val", num_scenes=1, image_size=32).scene(0).image
    pixels = stack_images([image], 48).float() / 255
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(
        to_pixel_values([image], ImageConfig(48, MEAN, STD)), (pixels - mean) / std, atol=1e-6
    )
    # control: other statistics give other values
    assert not torch.allclose(to_pixel_values([flat], ImageConfig(4)), out[:1], atol=1e-3)
    with pytest.raises(TypeError, match="image_config must be an ImageConfig"):
        to_pixel_values([flat], (4, MEAN, STD))
