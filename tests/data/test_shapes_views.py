"""ShapesWorld per-concern determinism, lazy generation and the task views (captions, masks, classes, retrieval)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vlblocks.data import COLORS, SHAPES, SIZES, ShapesWorld
from vlblocks.data.shapes import captions as captions_module
from vlblocks.data.shapes import questions as questions_module
from vlblocks.data.shapes.objects import grid_cell


def all_questions(world: ShapesWorld) -> list[dict]:
    return world.vqa().records()


def all_captions(world: ShapesWorld) -> list[list[str]]:
    return [world.scene_captions(i) for i in range(len(world))]


# ------------------------------------------------------------------------------------ per-concern streams
def test_a_new_caption_template_changes_no_image_no_question_and_no_full_caption(monkeypatch) -> None:
    before = ShapesWorld("train", num_scenes=40, image_size=32, seed=5)
    images, questions, captions = before.images.clone(), all_questions(before), all_captions(before)

    def shout(rng, objects, image_size, margin):
        rng.random(7)  # consumes the caption stream differently
        return f"look: {len(objects)} things {rng.integers(1000)}"

    monkeypatch.setattr(captions_module, "CAPTION_TEMPLATES", (shout, *captions_module.CAPTION_TEMPLATES))
    after = ShapesWorld("train", num_scenes=40, image_size=32, seed=5)
    assert after.images.numpy().tobytes() == images.numpy().tobytes()
    assert torch.equal(after.masks, before.masks)
    assert all_questions(after) == questions
    new = all_captions(after)
    assert [c[0] for c in new] == [c[0] for c in captions]  # the full caption uses no randomness
    assert new != captions and any(
        "look:" in c for caps in new for c in caps
    )  # control: the template is used


def test_a_new_question_type_changes_no_image_and_no_caption(monkeypatch) -> None:
    before = ShapesWorld("val", num_scenes=30, image_size=32, seed=1)
    images, captions = before.images.clone(), all_captions(before)
    questions = all_questions(before)

    def ask_size(rng, facts):
        i = int(rng.integers(len(facts.objects)))
        return ("size", i), f"what size is object {i}?", facts.objects[i].size

    monkeypatch.setattr(questions_module, "QUESTION_TYPES", (*questions_module.QUESTION_TYPES, "size"))
    monkeypatch.setitem(questions_module._GENERATORS, "size", ask_size)
    monkeypatch.setitem(questions_module.ANSWER_TYPES, "size", "other")
    after = ShapesWorld("val", num_scenes=30, image_size=32, seed=1)
    assert after.images.numpy().tobytes() == images.numpy().tobytes()
    assert all_captions(after) == captions
    new = all_questions(after)
    assert new != questions and any(q["question_type"] == "size" for q in new)  # control


def test_scene_i_does_not_depend_on_num_scenes() -> None:
    small, large = ShapesWorld("test", num_scenes=7, seed=2), ShapesWorld("test", num_scenes=19, seed=2)
    assert torch.equal(small.images, large.images[:7]) and torch.equal(small.masks, large.masks[:7])
    for i in range(7):
        assert small.objects(i) == large.objects(i)
        assert small.scene_captions(i) == large.scene_captions(i)
        assert small.scene_questions(i) == large.scene_questions(i)


def test_same_arguments_same_world_and_splits_differ() -> None:
    a, b = ShapesWorld("val", num_scenes=12, seed=3), ShapesWorld("val", num_scenes=12, seed=3)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert all_questions(a) == all_questions(b) and all_captions(a) == all_captions(b)
    for other in (ShapesWorld("train", num_scenes=12, seed=3), ShapesWorld("test", num_scenes=12, seed=3)):
        assert not torch.equal(a.images, other.images)
        assert [o.center for i in range(12) for o in a.objects(i)] != [
            o.center for i in range(12) for o in other.objects(i)
        ]
        assert all_captions(a) != all_captions(other)


# ----------------------------------------------------------------------------------------------- laziness
def test_generation_is_lazy() -> None:
    world = ShapesWorld("train", num_scenes=10, image_size=32)
    assert world.built == {"layout"}
    world.captions(per_image=True).references()
    world.retrieval().texts()
    world.classification().labels()
    assert world.built == {"layout", "captions"}  # captions and labels render no image
    seg = ShapesWorld("train", num_scenes=10, image_size=32)
    seg.segmentation(classes="instance")[3]
    assert seg.built == {"layout", "images"}  # masks build no question and no caption
    vqa = ShapesWorld("train", num_scenes=10, image_size=32)
    vqa.vqa().answers()
    assert vqa.built == {"layout", "questions"}
    vqa.vqa()[0]
    assert vqa.built == {"layout", "questions", "images"}


# ------------------------------------------------------------------------------------------------- views
@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("val", num_scenes=200, seed=0)


WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
POSITIONS = {
    "at the top left": (0, 0), "at the top": (0, 1), "at the top right": (0, 2),
    "on the left": (1, 0), "in the center": (1, 1), "on the right": (1, 2),
    "at the bottom left": (2, 0), "at the bottom": (2, 1), "at the bottom right": (2, 2),
}  # fmt: skip


def parse_full_caption(text: str) -> tuple[int, list[tuple[str, str, str, tuple[int, int]]]]:
    """An independent reading: "three shapes: a large red circle at the top left, ... and ..." -> objects."""
    count, rest = text.split(": ", 1)
    parts = rest.replace(" and ", ", ").split(", ")
    objects = []
    for part in parts:
        words = part.split()
        assert words[0] in ("a", "an")
        size, color, shape = words[1:4]
        assert size in SIZES and color in COLORS and shape in SHAPES, part
        objects.append((size, color, shape, POSITIONS[" ".join(words[4:])]))
    return WORDS[count.split()[0]], objects


def test_full_caption_names_every_object_in_reading_order(world: ShapesWorld) -> None:
    caps = world.captions(per_image=True)
    for i in range(len(world)):
        text = world.scene_captions(i)[0]
        assert text == caps.full_caption(i) == world.full_caption(i)
        count, named = parse_full_caption(text)
        objects = world.objects(i)
        assert count == len(objects) == len(named)
        expected = sorted(
            (o.size, o.color, o.shape, grid_cell(o, world.image_size)) for o in objects
        )  # same multiset of objects ...
        assert sorted(named) == expected
        assert [n[3] for n in named] == sorted(n[3] for n in named)  # ... listed in reading order


def test_full_captions_identify_scenes() -> None:
    """With two or more objects per scene, nearly every full caption is unique among 1000 validation scenes."""
    many = ShapesWorld("val", num_scenes=1000, min_objects=2, image_size=32)
    counts = Counter(many.retrieval().texts())
    assert sum(n for n in counts.values() if n > 1) <= 10
    generic = Counter(f"{len(many.objects(i))} shapes" for i in range(1000))  # control: a generic caption
    assert sum(n for n in generic.values() if n > 1) == 1000


def test_segmentation_classes(world: ShapesWorld) -> None:
    shape, color_shape, instance = (
        world.segmentation(classes=c) for c in ("shape", "color_shape", "instance")
    )
    assert shape.class_names == ("background", *SHAPES) and shape.num_classes == 4
    assert len(color_shape.class_names) == 19 and color_shape.class_names[1] == "red circle"
    assert instance.class_names[:3] == ("background", "object 1", "object 2")
    for i in (0, 5, 17):
        objects = world.objects(i)
        inst = instance[i]["mask"]
        assert inst.dtype == torch.long and inst.shape == (64, 64)
        assert set(inst.unique().tolist()) == set(range(len(objects) + 1))
        for k, o in enumerate(objects):
            pixels = inst == k + 1
            assert (shape[i]["mask"][pixels] == 1 + SHAPES.index(o.shape)).all()
            name = color_shape.class_names[int(color_shape[i]["mask"][pixels][0])]
            assert name == f"{o.color} {o.shape}" and (color_shape[i]["mask"][pixels] > 0).all()
            x, y, w, h = o.bbox
            rows, cols = np.nonzero(pixels.numpy())
            assert (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) == (
                x,
                y,
                w,
                h,
            )
        assert torch.equal(shape[i]["mask"] == 0, inst == 0)
        assert torch.equal(shape[i]["image"], world.images[i])
    with pytest.raises(ValueError, match="classes"):
        world.segmentation(classes="semantic")


def test_classification_label_is_the_shape_nearest_the_centre(world: ShapesWorld) -> None:
    view = world.classification()
    assert view.class_names == SHAPES and view.num_classes == 3
    labels = view.labels()
    for i in range(len(world)):
        objects = world.objects(i)
        dist = [np.hypot(o.center[0] - 32, o.center[1] - 32) for o in objects]
        assert labels[i] == SHAPES.index(objects[int(np.argmin(dist))].shape)
        assert view[i]["label"] == labels[i]
    share = Counter(labels).most_common(1)[0][1] / len(labels)
    assert share < 0.42 and len(set(labels)) == 3  # balanced: the majority class is far from 50%


def test_retrieval_pairs(world: ShapesWorld) -> None:
    view = world.retrieval()
    assert len(view) == len(world) and view.texts()[4] == world.full_caption(4)
    item = view[4]
    assert set(item) == {"image", "image_id", "caption", "captions"}
    assert item["caption"] == item["captions"][0] == world.full_caption(4) and len(item["captions"]) == 5
    assert item["image_id"] == 5 and torch.equal(item["image"], world.images[4])
    assert view[-1]["image_id"] == len(world)
    with pytest.raises(IndexError, match="index"):
        view[len(world)]


def test_captions_view(world: ShapesWorld) -> None:
    caps = world.captions()
    assert len(caps) == 5 * len(world)
    item = caps[7]  # scene 1, caption 2
    assert item["image_id"] == 2 and item["caption"] == world.scene_captions(1)[2] == item["captions"][2]
    assert caps[5]["caption"] == world.full_caption(1)
    refs = world.captions(per_image=True).references()
    assert refs[2] == world.scene_captions(1) and len(refs) == len(world)
    assert all(len(set(c)) == 5 for c in refs.values())


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda w: w.segmentation(classes=3), ValueError, "classes"),
        (lambda w: w.mask(0, "colour"), ValueError, "classes"),
        (lambda w: w.mask(10), IndexError, "index"),
        (lambda w: w.objects(-1), IndexError, "index"),
        (lambda w: w.scene("0"), TypeError, "index"),
        (lambda w: w.scene_captions(1.0), TypeError, "index"),
        (lambda w: w.vqa()["a"], TypeError, "index"),
        (lambda w: w.classification()[99], IndexError, "index"),
        (lambda w: w.export(1, mask_classes="x"), ValueError, "mask_classes"),
    ],
)
def test_view_bad_inputs(call, error, match) -> None:
    w = ShapesWorld("train", num_scenes=10, image_size=32)
    with pytest.raises(error, match=match):
        call(w)
