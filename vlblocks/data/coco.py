"""COCO captions reader, plus the JSON / image helpers shared by the dataset readers.

Reads the official COCO captions annotation format of Chen et al., "Microsoft COCO Captions: Data Collection and
Evaluation Server" (2015): ``{"images": [{"id", "file_name", "height", "width"}], "annotations": [{"id",
"image_id", "caption"}]}``. Images whose file is missing are dropped at construction with one warning; an image
that cannot be decoded at load time (corrupt, truncated, a decompression bomb) gives a ``None`` item, which the
collate functions skip and count. Images are read by ``vlblocks.data.image_io.load_image`` (16-bit, palette,
alpha and CMYK images converted correctly); file names that are absolute or leave the image folder are refused.

Shape legend: images are PIL RGB images of any size (resizing happens in the collate function).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from vlblocks.data.image_io import safe_image_path, try_load_image

__all__ = ["CocoCaptions", "check_entries", "drop_missing", "format_image_name", "read_json_list"]


def read_json_list(path: str | Path, key: str) -> tuple[dict, list]:
    """Load a JSON object file and return it with its list ``obj[key]``.

    Raises:
        ValueError: naming the file when it is empty, not UTF-8, not valid JSON (truncated files included), not
            an object, or ``key`` is missing, not a list, or empty.
        FileNotFoundError: when the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a JSON file with a {key!r} list)")
    if not path.is_file():
        raise ValueError(f"{path}: not a file (expected a JSON file with a {key!r} list)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected a JSON file"
        ) from None
    if not text.strip():
        raise ValueError(f"{path}: file is empty, expected a JSON object with a {key!r} list")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with a {key!r} list, got a {type(data).__name__}")
    if key not in data:
        raise ValueError(f"{path}: missing the top-level {key!r} key (found keys {sorted(data)})")
    if not isinstance(data[key], list) or not data[key]:
        raise ValueError(f"{path}: {key!r} must be a non-empty list, got {_brief(data[key])}")
    return data, data[key]


def check_entries(
    path: str | Path, key: str, entries: list, fields: dict[str, type | tuple[type, ...]]
) -> None:
    """Raise ValueError naming the file and entry when an entry is not a dict with ``fields`` of the right types."""
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {key}[{k}] must be an object, got {_brief(entry)}")
        for name, kind in fields.items():
            value = entry.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{path}: {key}[{k}][{name!r}] must be {_kind(kind)}, got {_brief(value)}")


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def drop_missing(image_paths: dict[int, Path], image_dir: Path, what: str) -> set[int]:
    """Ids of ``image_paths`` whose file exists; warn once with the count of missing files."""
    present = {i for i, p in image_paths.items() if p.is_file()}
    missing = len(image_paths) - len(present)
    if not present:
        example = next(iter(image_paths.values()))
        raise ValueError(
            f"image_dir {str(image_dir)!r}: none of the {len(image_paths)} {what} images exist (e.g. {example})"
        )
    if missing:
        warnings.warn(
            f"{missing} of {len(image_paths)} {what} images are missing in {image_dir}; their items are dropped",
            stacklevel=3,
        )
    return present


class CocoCaptions(Dataset):
    """COCO captions: one item per image, ``{"image": PIL RGB or None-item, "image_id": int, "captions": [str]}``.

    Args:
        annotations_json: an official captions file (``captions_train2014.json``).
        image_dir: the folder holding the images.
        image_name: file name pattern with ``{image_id}`` (e.g. ``"COCO_val2014_{image_id:012d}.jpg"``) or a
            callable ``image_id -> file name``; default: the ``file_name`` of the ``images`` entries.
    """

    def __init__(
        self,
        annotations_json: str | Path,
        image_dir: str | Path,
        *,
        image_name: str | Callable[[int], str] | None = None,
    ) -> None:
        data, anns = read_json_list(annotations_json, "annotations")
        check_entries(annotations_json, "annotations", anns, {"image_id": int, "caption": str})
        images = data.get("images") or []
        check_entries(annotations_json, "images", images, {"id": int, "file_name": str})
        self.image_dir = Path(image_dir)
        names = {im["id"]: im["file_name"] for im in images}
        self._captions: dict[int, list[str]] = {}
        for ann in anns:
            self._captions.setdefault(ann["image_id"], []).append(ann["caption"])
        paths = {}
        for image_id in self._captions:
            if image_name is None and image_id not in names:
                raise ValueError(
                    f"{annotations_json}: image_id {image_id} has captions but no 'images' entry"
                )
            name = format_image_name(image_name, image_id, names.get(image_id, ""))
            paths[image_id] = safe_image_path(self.image_dir, name, f"{annotations_json}: image {image_id}")
        present = drop_missing(paths, self.image_dir, "caption")
        self.image_ids = [i for i in self._captions if i in present]
        self._paths = paths

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict | None:
        image_id = self.image_ids[index]
        image = try_load_image(self._paths[image_id])
        if image is None:
            return None
        return {"image": image, "image_id": image_id, "captions": list(self._captions[image_id])}

    def references(self) -> dict[int, list[str]]:
        """image_id -> its reference captions (for caption evaluation), without loading images."""
        return {i: list(self._captions[i]) for i in self.image_ids}


def format_image_name(
    image_name: str | Callable[[int], str] | None, image_id: int, default: str, **fields: str
) -> str:
    """The file name of ``image_id``: ``default`` (None), ``image_name(image_id)`` or the formatted pattern."""
    if image_name is None:
        return default
    if callable(image_name):
        return image_name(image_id)
    return image_name.format(image_id=image_id, **fields)
