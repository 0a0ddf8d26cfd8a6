"""ShapesWorld.export in the VQA v2 / COCO layout, read back by VQAv2Dataset.from_root and CocoCaptions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlblocks.data import CocoCaptions, ShapesWorld, VQAv2Dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[ShapesWorld, ShapesWorld, Path]:
    folder = tmp_path_factory.mktemp("vqav2")
    train = ShapesWorld("train", num_scenes=12, image_size=32, seed=4)
    val = ShapesWorld("val", num_scenes=6, image_size=32, seed=4)
    train.export(folder)
    val.export(folder, mask_classes="instance")
    return train, val, folder


def image_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (S, S, 3) -> (3, S, S)


def test_layout_on_disk(root) -> None:
    _, _, folder = root
    names = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "2014/" not in str(p)
    )
    assert names == [
        "annotations/captions_train2014.json",
        "annotations/captions_val2014.json",
        "v2_OpenEnded_mscoco_train2014_questions.json",
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "v2_mscoco_train2014_annotations.json",
        "v2_mscoco_val2014_annotations.json",
    ]
    assert len(list((folder / "train2014").glob("COCO_train2014_*.png"))) == 12
    assert len(list((folder / "masks" / "val2014").glob("COCO_val2014_*.png"))) == 6


@pytest.mark.parametrize("split", ["train2014", "val2014"])
def test_from_root_reads_back_questions_answers_and_images(root, split: str) -> None:
    train, val, folder = root
    world = train if split == "train2014" else val
    dataset, original = VQAv2Dataset.from_root(folder, split), world.vqa()
    assert len(dataset) == len(original) and dataset.split == split
    assert dataset.records() == original.records()  # questions, ten answers, types, ids
    for k in range(0, len(dataset), 7):
        assert torch.equal(image_tensor(dataset[k]["image"]), original[k]["image"])
    other = train if world is val else val
    assert not torch.equal(image_tensor(dataset[0]["image"]), other.vqa()[0]["image"])  # control


def test_coco_captions_and_masks_read_back(root) -> None:
    _, val, folder = root
    captions = CocoCaptions(folder / "annotations" / "captions_val2014.json", folder / "val2014")
    assert captions.references() == val.captions(per_image=True).references()
    assert torch.equal(image_tensor(captions[2]["image"]), val.images[2])
    mask = np.asarray(Image.open(folder / "masks" / "val2014" / val.file_name(2)))
    assert np.array_equal(mask, val.mask(2, "instance")) and mask.max() == len(val.objects(2))


def test_from_root_finds_jpg_images_and_json_in_a_subfolder(root, tmp_path: Path) -> None:
    _, val, folder = root
    (tmp_path / "questions").mkdir()
    shutil.copy(folder / "v2_OpenEnded_mscoco_val2014_questions.json", tmp_path / "questions")
    shutil.copy(folder / "v2_mscoco_val2014_annotations.json", tmp_path)
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    for path in (folder / "val2014").iterdir():
        Image.open(path).save(
            tmp_path / "images" / "val2014" / (path.stem + ".jpg"), quality=100, subsampling=0
        )
    dataset = VQAv2Dataset.from_root(tmp_path, "val2014", train_fraction=0.5, seed=1)
    assert len(dataset.image_ids) == 3 and dataset.records()[0]["question"] in {
        r["question"] for r in val.vqa().records()
    }
    loaded = image_tensor(dataset[0]["image"]).float()
    errors = [(loaded - val.images[k].float()).abs().mean().item() for k in range(len(val))]
    assert int(np.argmin(errors)) == dataset.image_ids[0] - 1 and min(errors) < 2  # its own image, as a JPEG


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("v2_OpenEnded_mscoco_val2014_questions.json", "missing v2_OpenEnded_mscoco_val2014_questions.json"),
        ("v2_mscoco_val2014_annotations.json", "missing v2_mscoco_val2014_annotations.json"),
        ("val2014", "missing the image folder val2014/"),
    ],
)
def test_from_root_names_what_is_missing(root, tmp_path: Path, remove: str, message: str) -> None:
    _, _, folder = root
    for name in (
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "v2_mscoco_val2014_annotations.json",
        "val2014",
    ):
        if name != remove:
            (shutil.copytree if name == "val2014" else shutil.copy)(folder / name, tmp_path / name)
    with pytest.raises(ValueError, match=message) as err:
        VQAv2Dataset.from_root(tmp_path, "val2014")
    assert "COCO_val2014_<image_id:012d>.jpg" in str(err.value)  # the expected layout is spelled out


def test_from_root_bad_arguments(root, tmp_path: Path) -> None:
    _, _, folder = root
    with pytest.raises(ValueError, match="is not a folder"):
        VQAv2Dataset.from_root(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        VQAv2Dataset.from_root(folder, "../val2014")
    with pytest.raises(ValueError, match="missing v2_OpenEnded_mscoco_test2015"):
        VQAv2Dataset.from_root(folder, "test2015")
    with pytest.raises(ValueError, match="train_fraction"):
        VQAv2Dataset.from_root(folder, "val2014", train_fraction=1.5)
