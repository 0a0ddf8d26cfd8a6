"""VQA v2 / COCO captions readers (ShapesWorld export round trip, sampling, bad files) and AnswerVocab."""

from __future__ import annotations

import itertools
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlblocks.data import AnswerVocab, CocoCaptions, ShapesWorld, VQAv2Dataset, vqa_soft_score
from vlblocks.metrics.vqa import normalize_vqa_answer, vqa_question_accuracy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    world = ShapesWorld("val", num_scenes=20, seed=1)
    return world, world.export(tmp_path_factory.mktemp("shapes"))


def read_vqa(export, **kwargs) -> VQAv2Dataset:
    return VQAv2Dataset(
        export.questions_json,
        export.annotations_json,
        export.image_dir,
        image_name=export.image_name,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------- readers
def test_export_writes_official_formats(exported) -> None:
    world, export = exported
    questions = json.loads(export.questions_json.read_text())["questions"]
    annotations = json.loads(export.annotations_json.read_text())["annotations"]
    assert len(questions) == len(annotations) == 100 and set(questions[0]) == {
        "image_id",
        "question",
        "question_id",
    }
    ann = annotations[0]
    assert {
        "question_id",
        "image_id",
        "question_type",
        "answer_type",
        "multiple_choice_answer",
        "answers",
    } <= set(ann)
    assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
    assert {"answer", "answer_confidence", "answer_id"} == set(ann["answers"][0])
    assert export.image_dir == export.root / "val2014" and export.split == "val2014"
    assert export.questions_json == export.root / "v2_OpenEnded_mscoco_val2014_questions.json"
    assert export.annotations_json == export.root / "v2_mscoco_val2014_annotations.json"
    assert export.captions_json == export.root / "annotations" / "captions_val2014.json"
    assert json.loads(export.questions_json.read_text())["data_subtype"] == "val2014"
    assert (export.image_dir / "COCO_val2014_000000000001.png").is_file()
    mask = np.asarray(Image.open(export.mask_dir / "COCO_val2014_000000000003.png"))
    assert np.array_equal(mask, world.masks[2].numpy())
    captions = json.loads(export.captions_json.read_text())
    assert captions["images"][0] == {
        "id": 1,
        "file_name": "COCO_val2014_000000000001.png",
        "height": 64,
        "width": 64,
    }
    assert len(captions["annotations"]) == 100 and len({a["id"] for a in captions["annotations"]}) == 100


def test_vqa_reader_round_trip(exported) -> None:
    world, export = exported
    dataset, original = read_vqa(export), world.vqa()
    assert len(dataset) == len(original) and dataset.split == "val2014"
    for k in (0, 17, 99):
        item, ref = dataset[k], original[k]
        assert {key: item[key] for key in ref if key != "image"} == {
            key: ref[key] for key in ref if key != "image"
        }
        assert torch.equal(torch.from_numpy(np.array(item["image"])).permute(2, 0, 1), ref["image"])
    assert dataset.answers() == original.answers()


def test_coco_reader_round_trip(exported) -> None:
    world, export = exported
    captions = CocoCaptions(export.captions_json, export.image_dir)
    assert len(captions) == 20 and captions.references() == world.captions(per_image=True).references()
    item = captions[4]
    assert (
        item["image_id"] == 5
        and item["captions"] == world.scene(4).captions
        and item["image"].size == (64, 64)
    )


def test_train_fraction_keeps_whole_images(exported) -> None:
    _, export = exported
    full = read_vqa(export)
    part = read_vqa(export, train_fraction=0.25, seed=3)
    assert len(part.image_ids) == 5 and len(part) == 25  # 5 of 20 images, all 5 questions of each
    per_image = {i: [r for r in full.records() if r["image_id"] == i] for i in part.image_ids}
    assert sorted(r["question_id"] for r in part.records()) == sorted(
        r["question_id"] for v in per_image.values() for r in v
    )
    assert read_vqa(export, train_fraction=0.25, seed=3).image_ids == part.image_ids
    assert read_vqa(export, train_fraction=0.25, seed=4).image_ids != part.image_ids
    assert len(read_vqa(export, train_fraction=0.01).image_ids) == 1  # never empty
    with pytest.raises(ValueError, match="train_fraction"):
        read_vqa(export, train_fraction=0.0)


def test_missing_images_dropped_with_one_warning(exported, tmp_path: Path) -> None:
    _, export = exported
    for path in sorted(export.image_dir.iterdir())[:3]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = VQAv2Dataset(
            export.questions_json, export.annotations_json, tmp_path, image_name=export.image_name
        )
    assert len(caught) == 1 and "17 of 20" in str(caught[0].message)
    assert dataset.image_ids == [1, 2, 3] and len(dataset) == 15
    with pytest.raises(ValueError, match="none of the 20"):
        VQAv2Dataset(
            export.questions_json, export.annotations_json, tmp_path / "nowhere", image_name=export.image_name
        )


def test_malformed_json_names_the_file(exported, tmp_path: Path) -> None:
    _, export = exported
    questions = json.loads(export.questions_json.read_text())

    def write(name: str, content) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    cases = [
        (write("empty.json", ""), "empty"),
        (write("broken.json", '{"questions": ['), "not valid JSON"),
        (write("list.json", [1, 2]), "JSON object"),
        (write("nokey.json", {"info": {}}), "missing the top-level 'questions'"),
        (write("nolist.json", {"questions": []}), "non-empty list"),
        (
            write("badq.json", {"questions": [{"image_id": 1, "question": "q?"}]}),
            r"questions\[0\]\['question_id'\]",
        ),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            VQAv2Dataset(path, export.annotations_json, export.image_dir, image_name=export.image_name)
        assert path.name in str(err.value)
    extra = write(
        "extra.json",
        {"questions": questions["questions"] + [{"image_id": 1, "question": "?", "question_id": 7}]},
    )
    with pytest.raises(ValueError, match="no annotation for 1 of the 101"):
        VQAv2Dataset(extra, export.annotations_json, export.image_dir, image_name=export.image_name)
    bad_answers = write("badann.json", {"annotations": [{"question_id": 1000, "answers": ["yes"]}]})
    with pytest.raises(ValueError, match=r"badann.json: annotations\[0\]\['answers'\]\[0\]"):
        VQAv2Dataset(export.questions_json, bad_answers, export.image_dir, image_name=export.image_name)


def test_reads_the_real_vqa_v2_fixture(refdata: Path, tmp_path: Path) -> None:
    fixture = refdata / "vqav2-fixture"
    image_ids = {q["image_id"] for q in json.loads((fixture / "questions.json").read_text())["questions"]}
    for image_id in image_ids:  # placeholder images under the official COCO names
        Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / f"COCO_train2014_{image_id:012d}.jpg")
    dataset = VQAv2Dataset(fixture / "questions.json", fixture / "annotations.json", tmp_path)
    assert len(dataset) == 3 and dataset.split == "train2014"
    item = dataset[0]
    assert item["question"] == "What is this photo taken looking through?" and item["image"].size == (40, 30)
    assert item["answer"] == "net" and item["answer_type"] == "other" and len(item["answers"]) == 10
    vocab = AnswerVocab.build(dataset.answers())
    scores = vocab.soft_scores(item["answers"])
    assert scores[vocab.encode("net")] == pytest.approx(1.0) and scores.sum() > 1.0
    questions_only = VQAv2Dataset(fixture / "questions.json", None, tmp_path)
    assert questions_only[1]["answers"] == [] and questions_only[1]["answer"] == ""


# --------------------------------------------------------------------------------------------- AnswerVocab
def leave_one_out(prediction: str, answers: list[str]) -> float:
    """The VQA definition written out: mean over the 10 subsets of 9 humans of min(1, matches / 3)."""
    normalised = [normalize_vqa_answer(a) for a in answers]
    accs = []
    for left_out in range(len(answers)):
        others = normalised[:left_out] + normalised[left_out + 1 :]
        accs.append(min(1.0, sum(a == prediction for a in others) / 3))
    return sum(accs) / len(accs)


def test_soft_scores_match_the_leave_one_out_definition() -> None:
    assert [vqa_soft_score(c) for c in range(6)] == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0, 1.0])
    pool = ["2", "two", "Two.", "3", "yes", "no", "red", "Red", "a circle", "circle", "square"]
    vocab = AnswerVocab(["2", "3", "yes", "no", "red", "circle", "square"])
    rng = random.Random(0)
    for _ in range(200):
        answers = [rng.choice(pool) for _ in range(10)]
        scores = vocab.soft_scores(answers)
        expected = torch.tensor([leave_one_out(a, answers) for a in vocab.answers])
        assert torch.allclose(scores, expected, atol=1e-6)
        best = vocab.answers[int(scores.argmax())]  # agrees with the library's accuracy on normalised answers
        normalised = [normalize_vqa_answer(a) for a in answers]
        assert scores.max().item() == pytest.approx(vqa_question_accuracy(best, normalised))


def test_answer_vocab_build_encode_decode(tmp_path: Path) -> None:
    lists = [["Two", "2", "2", "two"], ["yes"] * 10, ["yes."] * 10, ["Red", "red", "blue"], ["2"]]
    vocab = AnswerVocab.build(lists + ["a dog", {"answer": "YES"}, None], top_k=3)
    assert vocab.answers == ["yes", "2", "dog"] and len(vocab) == 3  # counts 3, 2, 1; ties alphabetical
    assert vocab.encode("Two.") == 1 and vocab.encode("red") == -1 and vocab.decode(0) == "yes"
    raw = AnswerVocab.build(["Yes", "yes"], normalize=False)
    assert sorted(raw.answers) == ["Yes", "yes"] and raw.encode("YES") == -1
    vocab.save(tmp_path / "vocab.json")
    loaded = AnswerVocab.load(tmp_path / "vocab.json")
    assert loaded.answers == vocab.answers and loaded.normalize
    with pytest.raises(IndexError, match="index"):
        vocab.decode(3)


def test_answer_vocab_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top_k"):
        AnswerVocab.build(["a"], top_k=0)
    with pytest.raises(ValueError, match="no non-empty answer"):
        AnswerVocab.build([])
    with pytest.raises(TypeError, match="single str"):
        AnswerVocab.build("yes")
    with pytest.raises(ValueError, match="unique"):
        AnswerVocab(["a", "a"])
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="bad.json"):
        AnswerVocab.load(tmp_path / "bad.json")


def test_shapes_answers_score_full_credit() -> None:
    world = ShapesWorld("train", num_scenes=30)
    vocab = AnswerVocab.build(world.vqa().answers())
    for item in itertools.islice(world.vqa(), 100):
        scores = vocab.soft_scores(item["answers"])
        assert vocab.answers[int(scores.argmax())] == item["answer"] and scores.max() == 1.0
