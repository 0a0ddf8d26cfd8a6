"""VQA v2 reader and the answer vocabulary with the official soft scores.

Reads the official question / annotation JSON of Goyal et al., "Making the V in VQA Matter" (CVPR 2017), and
builds the usual answer-classification setup of Teney et al., "Tips and Tricks for Visual Question Answering"
(CVPR 2018): the ``top_k`` most frequent normalised answers are the classes, and each question gets a soft
target per class equal to the official VQA accuracy of that answer, the mean over the ten leave-one-out subsets
of ``min(1, matches / 3)``: 1 human -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0. Answers are normalised with
the official evaluator's processing (``vlblocks.metrics.vqa.normalize_vqa_answer``).

Shape legend: K answer classes; an item holds ten raw answers; ``soft_scores`` returns (K,).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vlblocks._checks import check_int, check_positive_int, check_probability
from vlblocks.data.coco import check_entries, drop_missing, format_image_name, read_json_list
from vlblocks.data.image_io import safe_image_path, try_load_image
from vlblocks.metrics.vqa import normalize_vqa_answer

__all__ = ["AnswerVocab", "VQAv2Dataset", "infer_answer_type", "vqa_soft_score"]

_normalize = lru_cache(maxsize=1 << 16)(normalize_vqa_answer)


def vqa_soft_score(count: int, num_answers: int = 10) -> float:
    """Official VQA accuracy of an answer given by ``count`` of ``num_answers`` humans (leave-one-out mean).

    Leaving out one of the ``count`` matching humans leaves ``count - 1`` matches, leaving out any other leaves
    ``count``; so the mean is ``(count * min(1, (count-1)/3) + (n - count) * min(1, count/3)) / n``.
    """
    if num_answers <= 0 or count <= 0:
        return 0.0
    return (count * min(1.0, (count - 1) / 3) + (num_answers - count) * min(1.0, count / 3)) / num_answers


def infer_answer_type(answer: str) -> str:
    """VQA answer type of a (raw) answer: "yes/no", "number" or "other"."""
    norm = _normalize(answer)
    return "yes/no" if norm in ("yes", "no") else "number" if norm.isdigit() else "other"


class AnswerVocab:
    """Answer classes: a list of (normalised) answers, with encode / decode and soft VQA targets.

    Args:
        answers: the class answers, index = class id.
        normalize: whether answers are passed through the official VQA normalisation before lookup.
    """

    def __init__(self, answers: Sequence[str], *, normalize: bool = True) -> None:
        if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
            raise TypeError(f"answers must be a sequence of str, got {type(answers).__name__}")
        if len(set(answers)) != len(answers):
            dupes = sorted(a for a, n in Counter(answers).items() if n > 1)
            raise ValueError(f"answers must be unique, got duplicates {dupes[:5]}")
        self.answers = list(answers)
        self.normalize = bool(normalize)
        self._index = {a: i for i, a in enumerate(self.answers)}

    @classmethod
    def build(
        cls,
        answer_lists_or_answers: Iterable[str | Sequence[str] | dict],
        *,
        top_k: int = 1000,
        normalize: bool = True,
    ) -> AnswerVocab:
        """The ``top_k`` most frequent (normalised) multiple-choice answers, ties broken alphabetically.

        Each element is an answer (the ``multiple_choice_answer``), a list of human answers (its most common
        normalised answer counts), or a question item dict (its ``"answer"`` counts); ``None`` is skipped.
        """
        if isinstance(answer_lists_or_answers, str):
            raise TypeError("answer_lists_or_answers must be an iterable of answers, got a single str")
        top_k = check_positive_int("top_k", top_k)
        norm = _normalize if normalize else (lambda a: a)
        counts: Counter = Counter()
        for item in answer_lists_or_answers:
            if item is None:
                continue
            if isinstance(item, dict):
                item = item["answer"]
            if isinstance(item, (list, tuple)):
                if not item:
                    continue
                item = Counter(norm(a) for a in item).most_common(1)[0][0]
            if not isinstance(item, str):
                raise TypeError(f"answers must be str, list of str or item dicts, got {type(item).__name__}")
            answer = norm(item)
            if answer:
                counts[answer] += 1
        if not counts:
            raise ValueError("answer_lists_or_answers holds no non-empty answer")
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        return cls([a for a, _ in ordered], normalize=normalize)

    def __len__(self) -> int:
        return len(self.answers)

    def __repr__(self) -> str:
        return f"AnswerVocab(size={len(self)}, normalize={self.normalize}, first={self.answers[:5]})"

    def _norm(self, answer: str) -> str:
        return _normalize(answer) if self.normalize else answer

    def encode(self, answer: str) -> int:
        """Class id of ``answer`` (normalised first), or -1 when it is not in the vocabulary."""
        return self._index.get(self._norm(answer), -1)

    def decode(self, index: int) -> str:
        """Answer of class ``index``."""
        if not 0 <= index < len(self.answers):
            raise IndexError(f"index must be in [0, {len(self.answers)}), got {index}")
        return self.answers[index]

    def soft_scores(self, answers: Sequence[str]) -> torch.Tensor:
        """Soft target (K,) float32: for every class, its VQA accuracy against ``answers`` (10 humans).

        Every human answer is normalised first (when ``normalize``), as VQA training pipelines do; the official
        evaluator normalises the human answers only when they disagree (see ``vlblocks.metrics.vqa``).
        """
        scores = torch.zeros(len(self.answers))
        for answer, count in Counter(self._norm(a) for a in answers).items():
            index = self._index.get(answer)
            if index is not None:
                scores[index] = vqa_soft_score(count, len(answers))
        return scores

    def save(self, path: str | Path) -> None:
        """Write ``{"answers": [...], "normalize": bool}`` as JSON."""
        Path(path).write_text(json.dumps({"answers": self.answers, "normalize": self.normalize}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        """Read a file written by ``save``; ValueError naming the file when it is not such a file."""
        data, answers = read_json_list(path, "answers")
        if not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}: 'answers' must be a list of str")
        normalize = data.get("normalize", True)
        if not isinstance(normalize, bool):
            raise ValueError(f"{path}: 'normalize' must be true or false, got {normalize!r}")
        try:
            return cls(answers, normalize=normalize)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _read_annotations(path: str | Path) -> dict[int, dict]:
    _, anns = read_json_list(path, "annotations")
    check_entries(path, "annotations", anns, {"question_id": int, "answers": list})
    for k, ann in enumerate(anns):
        for j, a in enumerate(ann["answers"]):
            if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
                raise ValueError(
                    f"{path}: annotations[{k}]['answers'][{j}] must be an object with an 'answer' str"
                )
    return {ann["question_id"]: ann for ann in anns}


def _record(q: dict, ann: dict | None) -> dict:
    answers = [a["answer"] for a in ann["answers"]] if ann else []
    answer = (ann or {}).get("multiple_choice_answer")
    if not isinstance(answer, str):
        answer = Counter(answers).most_common(1)[0][0] if answers else ""
    return {
        "image_id": q["image_id"],
        "question_id": q["question_id"],
        "question": q["question"],
        "answers": answers,
        "answer": answer,
        "question_type": (ann or {}).get("question_type", "unknown"),
        "answer_type": (ann or {}).get("answer_type") or infer_answer_type(answer),
    }


class VQAv2Dataset(Dataset):
    """VQA v2 question items ``{"image": PIL RGB, "image_id", "question_id", "question", "answers" (10 str),
    "answer" (multiple_choice_answer), "question_type", "answer_type"}``; an unreadable image gives ``None``.

    Args:
        questions_json: official questions file (``v2_OpenEnded_mscoco_train2014_questions.json``).
        annotations_json: official annotations file, or None for test splits (items then have no answers).
        image_dir: the image folder.
        image_name: file name pattern with ``{split}`` (the questions file's ``data_subtype``, e.g. train2014)
            and ``{image_id}``, or a callable ``image_id -> file name``.
        train_fraction: keep this fraction of the images (drawn at random with ``seed``) with all their
            questions, in (0, 1]. Images whose file is missing are then dropped with one warning.
        seed: seed of the image sampling.
    """

    def __init__(
        self,
        questions_json: str | Path,
        annotations_json: str | Path | None,
        image_dir: str | Path,
        *,
        image_name: str | Callable[[int], str] = "COCO_{split}_{image_id:012d}.jpg",
        train_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        train_fraction = check_probability("train_fraction", train_fraction, closed_low=False)
        seed = check_int("seed", seed)
        if not isinstance(image_name, str) and not callable(image_name):
            raise TypeError(f"image_name must be a format str or a callable, got {type(image_name).__name__}")
        qdata, questions = read_json_list(questions_json, "questions")
        check_entries(
            questions_json, "questions", questions, {"image_id": int, "question": str, "question_id": int}
        )
        anns = _read_annotations(annotations_json) if annotations_json is not None else None
        if anns is not None:
            missing = [q["question_id"] for q in questions if q["question_id"] not in anns]
            if missing:
                raise ValueError(
                    f"{annotations_json}: no annotation for {len(missing)} of the {len(questions)} questions of "
                    f"{questions_json} (e.g. question_id {missing[0]})"
                )
        records = [_record(q, anns[q["question_id"]] if anns is not None else None) for q in questions]
        self.image_dir = Path(image_dir)
        self.split = str(qdata.get("data_subtype", ""))
        image_ids = sorted({r["image_id"] for r in records})
        if train_fraction < 1:
            keep = max(1, round(train_fraction * len(image_ids)))
            image_ids = sorted(random.Random(seed).sample(image_ids, keep))
        self._paths = {
            i: safe_image_path(
                self.image_dir,
                format_image_name(image_name, i, "", split=self.split),
                f"{questions_json}: image_id {i}",
            )
            for i in image_ids
        }
        present = drop_missing(self._paths, self.image_dir, "VQA")
        self._records = [r for r in records if r["image_id"] in present]
        self.image_ids = [i for i in image_ids if i in present]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict | None:
        record = self._records[index]
        image = try_load_image(self._paths[record["image_id"]])
        if image is None:
            return None
        return {"image": image, **record, "answers": list(record["answers"])}

    def answers(self) -> list[str]:
        """The multiple-choice answer of every question (for ``AnswerVocab.build``), without loading images."""
        return [r["answer"] for r in self._records]

    def records(self) -> list[dict]:
        """Every question item without its image (copies)."""
        return [dict(r, answers=list(r["answers"])) for r in self._records]

    @classmethod
    def from_root(
        cls, root: str | Path, split: str = "train2014", *, train_fraction: float = 1.0, seed: int = 0
    ) -> VQAv2Dataset:
        """Read split ``split`` of a VQA v2 folder laid out as the official downloads unpack::

            root/v2_OpenEnded_mscoco_{split}_questions.json
            root/v2_mscoco_{split}_annotations.json             (optional for test splits)
            root/{images}/COCO_{images}_{image_id:012d}.jpg     (or .png)

        where ``{images}`` is ``split`` (``test2015`` for ``test-dev2015``). The two JSON files may also sit in
        one direct subfolder of ``root`` (e.g. ``root/questions/``), the image folder in ``root/images/``.
        ``ShapesWorld.export(root)`` writes this layout. ``train_fraction`` and ``seed`` are as in the constructor.

        Raises:
            ValueError: naming the missing file or folder and the expected layout.
        """
        root = Path(root).expanduser()
        if not isinstance(split, str) or not split or any(c in split for c in "/\\"):
            raise ValueError(f"split must be a VQA v2 split name such as 'train2014', got {split!r}")
        layout = _layout_text(root, split)
        if not root.is_dir():
            raise ValueError(f"VQA v2 root {str(root)!r} is not a folder; expected\n{layout}")
        questions = _find_json(root, f"v2_OpenEnded_mscoco_{split}_questions.json")
        if questions is None:
            raise ValueError(
                f"{root}: missing v2_OpenEnded_mscoco_{split}_questions.json; expected\n{layout}"
            )
        annotations = _find_json(root, f"v2_mscoco_{split}_annotations.json")
        if annotations is None and not split.startswith("test"):
            raise ValueError(f"{root}: missing v2_mscoco_{split}_annotations.json; expected\n{layout}")
        images = _image_split(split)
        image_dir = next((d for d in (root / images, root / "images" / images) if d.is_dir()), None)
        if image_dir is None:
            raise ValueError(f"{root}: missing the image folder {images}/; expected\n{layout}")

        def image_name(image_id: int) -> str:
            stem = f"COCO_{images}_{image_id:012d}"
            return (
                f"{stem}.png"
                if not (image_dir / f"{stem}.jpg").exists() and (image_dir / f"{stem}.png").exists()
                else f"{stem}.jpg"
            )

        return cls(
            questions, annotations, image_dir, image_name=image_name, train_fraction=train_fraction, seed=seed
        )


def _image_split(split: str) -> str:
    return "test2015" if split.startswith("test-dev") else split


def _layout_text(root: Path, split: str) -> str:
    images = _image_split(split)
    return (
        f"  {root}/v2_OpenEnded_mscoco_{split}_questions.json\n"
        f"  {root}/v2_mscoco_{split}_annotations.json\n"
        f"  {root}/{images}/COCO_{images}_<image_id:012d>.jpg (or .png)"
    )


def _find_json(root: Path, name: str) -> Path | None:
    """``root/name``, else ``root/<one subfolder>/name`` (first in sorted order), else None."""
    if (root / name).is_file():
        return root / name
    return next((d / name for d in sorted(root.iterdir()) if d.is_dir() and (d / name).is_file()), None)
