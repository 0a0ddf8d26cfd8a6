"""Export a ShapesWorld in the real datasets' layouts, so the real readers load it unchanged.

Writes the VQA v2 layout of Goyal et al., "Making the V in VQA Matter" (CVPR 2017) exactly as the official
download unpacks (what ``VQAv2Dataset.from_root`` reads) and the COCO captions layout of Chen et al., "Microsoft
COCO Captions" (2015), with the world's split named like the COCO split it stands for (train -> train2014,
val -> val2014, test -> test2015)::

    folder/v2_OpenEnded_mscoco_train2014_questions.json    {"data_subtype": "train2014", "questions": [...]}
    folder/v2_mscoco_train2014_annotations.json            {"annotations": [... ten answers each ...]}
    folder/train2014/COCO_train2014_000000000001.png       RGB images (PNG: lossless)
    folder/annotations/captions_train2014.json             {"images": [...], "annotations": [...]}
    folder/masks/train2014/COCO_train2014_000000000001.png 8-bit gray class ids (``mask_classes``)

Shape legend: S image side; images are written as S x S RGB PNGs, masks as S x S 8-bit gray PNGs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from vlblocks._checks import check_choice

if TYPE_CHECKING:
    from vlblocks.data.shapes.world import ShapesWorld

__all__ = ["COCO_SPLITS", "ShapesExport", "export_split", "export_world"]

COCO_SPLITS = {"train": "train2014", "val": "val2014", "test": "test2015"}  # world split -> COCO split name


@dataclass(frozen=True)
class ShapesExport:
    """Paths written by ``ShapesWorld.export``.

    ``split`` is the COCO split name (e.g. "train2014"); ``image_name`` is the file-name pattern to give
    ``VQAv2Dataset`` (``{split}`` is filled from the questions file's ``data_subtype``).
    """

    root: Path
    split: str
    image_dir: Path
    mask_dir: Path
    questions_json: Path
    annotations_json: Path
    captions_json: Path
    image_name: str


def export_split(split: str) -> str:
    """COCO split name standing for a ShapesWorld split: train -> train2014, val -> val2014, test -> test2015."""
    return COCO_SPLITS[check_choice("split", split, tuple(COCO_SPLITS))]  # type: ignore[index]


def _vqa_json(world: ShapesWorld, header: dict) -> tuple[dict, dict]:
    questions, annotations = [], []
    for i in range(len(world)):
        for q in world.scene_questions(i):
            questions.append({k: q[k] for k in ("image_id", "question", "question_id")})
            answers = [
                {"answer": a, "answer_confidence": "yes" if a == q["answer"] else "maybe", "answer_id": k + 1}
                for k, a in enumerate(q["answers"])
            ]
            ann = {k: q[k] for k in ("question_id", "image_id", "question_type", "answer_type")}
            annotations.append({**ann, "multiple_choice_answer": q["answer"], "answers": answers})
    return {**header, "questions": questions}, {**header, "annotations": annotations}


def _captions_json(world: ShapesWorld, header: dict) -> dict:
    images = [
        {"id": world.image_id(i), "file_name": world.file_name(i), "height": world.image_size,
         "width": world.image_size}
        for i in range(len(world))
    ]  # fmt: skip
    captions = [
        {"id": world.image_id(i) * 10 + k, "image_id": world.image_id(i), "caption": c}
        for i in range(len(world))
        for k, c in enumerate(world.scene_captions(i))
    ]
    return {"info": header["info"], "images": images, "annotations": captions}


def export_world(world: ShapesWorld, folder: str | Path, *, mask_classes: str = "shape") -> ShapesExport:
    """Write ``world`` under ``folder`` in the VQA v2 + COCO captions layout (module docstring); return the paths.

    ``mask_classes`` picks the masks written ("shape", "color_shape" or "instance", see ``ShapesWorld.mask``).
    Existing files of the same names are overwritten; other files in ``folder`` are left alone.
    """
    from vlblocks.data.shapes.world import MASK_CLASSES

    check_choice("mask_classes", mask_classes, MASK_CLASSES)
    root, split = Path(folder), export_split(world.split)
    out = ShapesExport(
        root=root,
        split=split,
        image_dir=root / split,
        mask_dir=root / "masks" / split,
        questions_json=root / f"v2_OpenEnded_mscoco_{split}_questions.json",
        annotations_json=root / f"v2_mscoco_{split}_annotations.json",
        captions_json=root / "annotations" / f"captions_{split}.json",
        image_name="COCO_{split}_{image_id:012d}.png",
    )
    for path in (out.image_dir, out.mask_dir, out.captions_json.parent):
        path.mkdir(parents=True, exist_ok=True)
    images = world.images.permute(0, 2, 3, 1).numpy()  # (N, 3, S, S) -> (N, S, S, 3)
    for i in range(len(world)):
        Image.fromarray(images[i]).save(out.image_dir / world.file_name(i))
        Image.fromarray(world.mask(i, mask_classes), mode="L").save(out.mask_dir / world.file_name(i))
    info = {"description": f"ShapesWorld (vlblocks), split {world.split!r}", "seed": world.seed,
            "image_size": world.image_size, "mask_classes": mask_classes}  # fmt: skip
    header = {"info": info, "license": {}, "data_type": "mscoco", "data_subtype": split}
    questions, annotations = _vqa_json(world, header)
    out.questions_json.write_text(json.dumps({**questions, "task_type": "Open-Ended"}))
    out.annotations_json.write_text(json.dumps(annotations))
    out.captions_json.write_text(json.dumps(_captions_json(world, header)))
    return out
