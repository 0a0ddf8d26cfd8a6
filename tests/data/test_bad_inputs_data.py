"""Bad-input suite of the data readers: malformed, non-UTF-8, truncated and missing files, wrong arguments.

Every case asserts a clear error (ValueError / TypeError / FileNotFoundError) whose message names the file or
the argument; ``CASES`` is the table (its size is reported in docs/design-notes.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlblocks.data import AnswerVocab, CocoCaptions, ShapesWorld, VQAv2Dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("good")
    export = ShapesWorld("val", num_scenes=3, image_size=32).export(root)
    AnswerVocab(["yes", "no"]).save(root / "vocab.json")
    return {
        "questions": export.questions_json,
        "annotations": export.annotations_json,
        "captions": export.captions_json,
        "vocab": root / "vocab.json",
        "images": export.image_dir,
        "image_name": export.image_name,
    }


def edit_json(source: Path, change) -> str:
    data = json.loads(source.read_text())
    change(data)
    return json.dumps(data)


def truncated(source: Path) -> bytes:
    return source.read_bytes()[: len(source.read_bytes()) // 2]


# (file kind, how to spoil it: bytes / str / callable(data) or None for "missing", expected error, message)
CASES = [
    ("questions", b"", ValueError, "file is empty"),
    ("questions", b"\xff\xfe{\x00}", ValueError, "not UTF-8"),
    ("questions", "truncate", ValueError, "not valid JSON"),
    ("questions", "[1, 2]", ValueError, "expected a JSON object"),
    ("questions", lambda d: d.pop("questions"), ValueError, "missing the top-level 'questions'"),
    ("questions", lambda d: d.update(questions=[]), ValueError, "'questions' must be a non-empty list"),
    (
        "questions",
        lambda d: d["questions"][1].pop("question_id"),
        ValueError,
        r"questions\[1\]\['question_id'\]",
    ),
    (
        "questions",
        lambda d: d["questions"][0].update(image_id="1"),
        ValueError,
        r"\['image_id'\] must be int",
    ),
    (
        "questions",
        lambda d: d["questions"][0].update(question=None),
        ValueError,
        r"\['question'\] must be str",
    ),
    ("questions", lambda d: d["questions"].append(7), ValueError, r"questions\[15\] must be an object"),
    ("questions", None, FileNotFoundError, "no such file"),
    ("annotations", b"\xc3\x28", ValueError, "not UTF-8"),
    ("annotations", "truncate", ValueError, "not valid JSON"),
    ("annotations", lambda d: d["annotations"].pop(), ValueError, "no annotation for 1 of the 15 questions"),
    (
        "annotations",
        lambda d: d["annotations"][2].update(answers="yes"),
        ValueError,
        r"\['answers'\] must be list",
    ),
    ("annotations", lambda d: d["annotations"][2]["answers"].append(3), ValueError, r"\['answers'\]\[10\]"),
    ("annotations", None, FileNotFoundError, "no such file"),
    ("captions", b"", ValueError, "file is empty"),
    ("captions", b'{"annotations": [\xff]}', ValueError, "not UTF-8"),
    ("captions", "truncate", ValueError, "not valid JSON"),
    ("captions", lambda d: d["annotations"][0].update(caption=3), ValueError, r"\['caption'\] must be str"),
    ("captions", lambda d: d["images"][0].pop("file_name"), ValueError, r"images\[0\]\['file_name'\]"),
    ("captions", lambda d: d["images"].pop(), ValueError, "image_id 3 has captions but no 'images' entry"),
    ("captions", lambda d: d["images"][0].update(file_name="/etc/hostname"), ValueError, "is absolute"),
    (
        "captions",
        lambda d: d["images"][0].update(file_name="../x.png"),
        ValueError,
        "leaves the image folder",
    ),
    ("captions", None, FileNotFoundError, "no such file"),
    ("vocab", b"\xff", ValueError, "not UTF-8"),
    ("vocab", "truncate", ValueError, "not valid JSON"),
    ("vocab", lambda d: d.update(answers=[1]), ValueError, "list of str"),
    ("vocab", lambda d: d.update(answers=["a", "a"]), ValueError, "unique"),
    ("vocab", lambda d: d.update(normalize="yes"), ValueError, "'normalize' must be true or false"),
]


def read(kind: str, path: Path, files: dict):
    if kind == "vocab":
        return AnswerVocab.load(path)
    if kind == "captions":
        return CocoCaptions(path, files["images"])
    questions = path if kind == "questions" else files["questions"]
    annotations = path if kind == "annotations" else files["annotations"]
    return VQAv2Dataset(questions, annotations, files["images"], image_name=files["image_name"])


@pytest.mark.parametrize(("kind", "spoil", "error", "match"), CASES)
def test_bad_files_name_the_file(
    files: dict, tmp_path: Path, kind: str, spoil, error: type, match: str
) -> None:
    path = tmp_path / f"bad_{kind}.json"
    if spoil == "truncate":
        path.write_bytes(truncated(files[kind]))
    elif callable(spoil):
        path.write_text(edit_json(files[kind], spoil))
    elif spoil is not None:
        path.write_bytes(spoil if isinstance(spoil, bytes) else spoil.encode())
    with pytest.raises(error, match=match) as err:
        read(kind, path, files)
    assert f"bad_{kind}.json" in str(err.value)
    read(kind, files[kind], files)  # control: the unspoiled file reads


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda f: VQAv2Dataset(f["questions"], f["annotations"], f["images"], train_fraction="0.5"), ValueError,
         "train_fraction"),
        (lambda f: VQAv2Dataset(f["questions"], f["annotations"], f["images"], train_fraction=float("nan")),
         ValueError, "train_fraction"),
        (lambda f: VQAv2Dataset(f["questions"], f["annotations"], f["images"], seed=1.5), TypeError, "seed"),
        (lambda f: VQAv2Dataset(f["questions"], f["annotations"], f["images"], image_name=3), TypeError,
         "image_name"),
        (lambda f: VQAv2Dataset(f["questions"], f["annotations"], f["images"]), ValueError, "none of the 3"),
        (lambda f: VQAv2Dataset(f["questions"].parent, f["annotations"], f["images"]), ValueError, "not a file"),
        (lambda f: AnswerVocab.build(["yes"], top_k=0), ValueError, "top_k"),
        (lambda f: AnswerVocab.build(["yes"], top_k=True), ValueError, "top_k"),
        (lambda f: AnswerVocab.build("yes"), TypeError, "single str"),
        (lambda f: AnswerVocab.build([3]), TypeError, "answers must be str"),
        (lambda f: AnswerVocab.build([""]), ValueError, "no non-empty answer"),
        (lambda f: VQAv2Dataset.from_root(f["questions"], "val2014"), ValueError, "is not a folder"),
        (lambda f: VQAv2Dataset.from_root(f["questions"].parent, 2014), ValueError, "split"),
    ],
)  # fmt: skip
def test_bad_arguments(files: dict, call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(files)
