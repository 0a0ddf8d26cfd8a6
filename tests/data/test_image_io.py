"""The image loader: 16-bit / float / palette / alpha / CMYK conversion, decompression bombs, unsafe file names."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlblocks.data import CocoCaptions, ShapesWorld, VQAv2Dataset
from vlblocks.data.image_io import UnreadableImageError, load_image, safe_image_path, try_load_image


def rgb(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_16_bit_gray_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    levels = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # a real 16-bit file
    out = rgb(load_image(tmp_path / "deep.png"))
    expected = np.rint(levels / 257.0)
    assert np.abs(out[..., 0] - expected).max() <= 1 and (out[..., 0] == out[..., 2]).all()
    assert (out == 255).mean() < 0.01 and out.min() == 0 and out.max() == 255
    naive = rgb(Image.open(tmp_path / "deep.png").convert("RGB"))  # control: what the old loader did
    assert (naive == 255).mean() > 0.9


def test_float_and_32_bit_images(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tiff")
    out = rgb(load_image(tmp_path / "float.tiff"))
    assert np.abs(out[..., 1] - np.rint(values * 255)).max() <= 1
    wide = (values * 65535).astype(np.int32)
    Image.fromarray(wide, mode="I").save(tmp_path / "wide.tiff")
    assert np.abs(rgb(load_image(tmp_path / "wide.tiff"))[..., 0] - np.rint(wide / 257)).max() <= 1


def test_palette_and_alpha_images_become_rgb_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[:4, :, 3], rgba[4:, :, 3] = 200, 255, 0  # top half opaque red, bottom transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    out = rgb(load_image(tmp_path / "alpha.png"))
    assert (out[:4] == [200, 0, 0]).all() and (out[4:] == 255).all()
    la = Image.fromarray(rgba[..., [0, 3]], mode="LA")
    la.save(tmp_path / "la.png")
    assert (rgb(load_image(tmp_path / "la.png"))[4:] == 255).all()
    palette = Image.fromarray(rgba, mode="RGBA").convert("P")  # keeps a transparent palette entry
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 7)))
    out = rgb(load_image(tmp_path / "palette.png"))
    assert out.shape == (8, 8, 3) and (out[:4] == [200, 0, 0]).all() and (out[4:] == 255).all()
    opaque = Image.fromarray(np.full((4, 4, 3), (10, 20, 30), dtype=np.uint8))
    opaque = opaque.convert("P", palette=Image.Palette.ADAPTIVE)
    opaque.save(tmp_path / "opaque.png")
    assert (rgb(load_image(tmp_path / "opaque.png")) == [10, 20, 30]).all()


def test_cmyk_and_one_bit_images(tmp_path: Path) -> None:
    source = Image.fromarray(np.full((8, 8, 3), (40, 90, 230), dtype=np.uint8))
    source.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(rgb(load_image(tmp_path / "cmyk.jpg")) - [40, 90, 230]).max() <= 3
    Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / "bits.png")
    assert (rgb(load_image(tmp_path / "bits.png"))[..., 0] == np.eye(8) * 255).all()


def png_with_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, followed by a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(data + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [30000, 12000])  # above PIL's own limit / above ours only
def test_decompression_bombs_are_refused(tmp_path: Path, side: int) -> None:
    path = png_with_header(tmp_path / "bomb.png", side, side)
    with pytest.raises(UnreadableImageError, match="bomb.png"):
        load_image(path)
    assert try_load_image(path) is None


def test_corrupt_truncated_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:400])
    for name in ("text.png", "cut.png"):
        with pytest.raises(UnreadableImageError, match=name):
            load_image(tmp_path / name)
        assert try_load_image(tmp_path / name) is None
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")
    assert try_load_image(tmp_path / "absent.png") is None and try_load_image(good) is not None


def test_bomb_in_a_dataset_is_skipped_and_counted(tmp_path: Path) -> None:
    world = ShapesWorld("val", num_scenes=4, image_size=32)
    export = world.export(tmp_path)
    png_with_header(export.image_dir / world.file_name(1), 30000, 30000)
    dataset = VQAv2Dataset.from_root(tmp_path, "val2014")
    items = [dataset[k] for k in range(len(dataset))]  # never raises
    assert [k for k, item in enumerate(items) if item is None] == [
        k for k, r in enumerate(dataset.records()) if r["image_id"] == 2
    ]
    from vlblocks.data import AnswerVocab, VQACollator, build_word_tokenizer
    from vlblocks.encoders import ImageConfig

    records = dataset.records()
    collate = VQACollator(
        build_word_tokenizer([r["question"] for r in records]),
        AnswerVocab.build([r["answer"] for r in records]),
        image_config=ImageConfig(32, (0.5,) * 3, (0.5,) * 3),
    )
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        batch = collate(items)
    assert collate.skipped == sum(item is None for item in items) > 0
    assert batch["pixel_values"].shape[0] == len(items) - collate.skipped
    captions = CocoCaptions(export.captions_json, export.image_dir)
    assert captions[1] is None and captions[0] is not None


@pytest.mark.parametrize(
    "name", ["/etc/hostname", "../x.png", "a/../../x.png", "C:\\x.png", "\\\\host\\x.png", ""]
)
def test_unsafe_file_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        safe_image_path(tmp_path, name, "entry 3")
    annotations = tmp_path / "captions.json"
    annotations.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "ok.png"}, {"id": 7, "file_name": name}],
                "annotations": [
                    {"id": 1, "image_id": 1, "caption": "a"},
                    {"id": 2, "image_id": 7, "caption": "b"},
                ],
            }
        )
    )
    with pytest.raises(ValueError, match=r"captions.json: image 7: file name") as err:
        CocoCaptions(annotations, tmp_path)
    assert repr(name) in str(err.value)


def test_unsafe_image_name_in_vqa_reader(tmp_path: Path) -> None:
    export = ShapesWorld("val", num_scenes=2, image_size=32).export(tmp_path)
    with pytest.raises(ValueError, match="image_id 1: file name '../COCO_1.png' leaves the image folder"):
        VQAv2Dataset(
            export.questions_json,
            export.annotations_json,
            export.image_dir,
            image_name="../COCO_{image_id}.png",
        )
    assert (
        safe_image_path(tmp_path, "sub/x.png", "e") == tmp_path / "sub" / "x.png"
    )  # control: relative is fine
