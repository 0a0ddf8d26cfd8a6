"""ShapesWorld language: objects, referring expressions, VQA questions with ten human-style answers, and captions.

The question types follow the CLEVR-style programs of Johnson et al., "CLEVR: A Diagnostic Dataset for
Compositional Language and Elementary Visual Reasoning" (CVPR 2017), kept to five families (color, shape,
count, exist, relation), and the answers follow the VQA v2 annotation form of Goyal et al., "Making the V in VQA
Matter" (CVPR 2017): ten human answers per question, mostly the true answer written in varied surface forms
("2" / "two", "yes" / "Yes." / "a circle") plus an occasional wrong answer, so the official answer
normalisation matters. Every question has exactly one correct answer computed from the scene's objects:

- referring expressions ("the red circle", "the small shape") are only used when exactly one object matches;
- an object is *left of* an anchor when its centre lies more than ``margin`` pixels left of the anchor's centre
  (likewise right / above / below); a relation question is only asked when exactly one object lies on that
  side and no other object is within ``margin`` of the anchor along that axis (so no answer hinges on a threshold).

Shape legend: S image side in pixels; all coordinates are pixels, x to the right and y downwards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from itertools import combinations, product

import numpy as np

__all__ = [
    "ANSWER_TYPES",
    "COLORS",
    "DIRECTIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "SIZES",
    "ShapeObject",
    "human_answers",
    "make_captions",
    "make_questions",
    "relation_target",
    "side_offset",
]

SHAPES = ("circle", "square", "triangle")
# Well separated RGB colours (every pair differs by >= 60 in some channel; none is close to the gray background).
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 50),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
}
SIZES = ("small", "large")
QUESTION_TYPES = ("color", "shape", "count", "exist", "relation")
ANSWER_TYPES = {"color": "other", "shape": "other", "count": "number", "exist": "yes/no", "relation": "other"}
DIRECTIONS = ("left", "right", "above", "below")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_FIELDS = ("size", "color", "shape")
_FIELD_COMBOS = [c for k in (1, 2, 3) for c in combinations(_FIELDS, k)]
_COMBO_MASKS = [tuple(f in c for f in _FIELDS) for c in _FIELD_COMBOS]
_VALUES = {"size": SIZES, "color": tuple(COLORS), "shape": SHAPES}
_REL_PHRASES = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
}
_P_WRONG, _P_VARIANT = 0.08, 0.27  # per annotator: a wrong answer / another surface form of the true answer


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: attributes, centre ``(x, y)``, radius, and COCO bbox ``(x, y, w, h)`` of its pixels."""

    shape: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    bbox: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def side_offset(obj: ShapeObject, anchor: ShapeObject, direction: str) -> float:
    """Signed distance in pixels of ``obj``'s centre from ``anchor``'s centre towards ``direction``."""
    dx, dy = obj.center[0] - anchor.center[0], obj.center[1] - anchor.center[1]
    return {"left": -dx, "right": dx, "above": -dy, "below": dy}[direction]


def relation_target(objects: list[ShapeObject], anchor: int, direction: str, margin: float) -> int | None:
    """Index of the one object on ``direction`` side of ``objects[anchor]``, or None when that is not well defined."""
    others = [j for j in range(len(objects)) if j != anchor]
    offsets = {j: side_offset(objects[j], objects[anchor], direction) for j in others}
    side = [j for j in others if offsets[j] > margin]
    band = [j for j in others if abs(offsets[j]) <= margin]
    return side[0] if len(side) == 1 and not band else None


def _phrase(attrs: dict[str, str], noun: str = "shape") -> str:
    words = [attrs[f] for f in ("size", "color") if f in attrs]
    return " ".join([*words, attrs.get("shape", noun)])


def _plural(attrs: dict[str, str], noun: str = "shapes") -> str:
    words = [attrs[f] for f in ("size", "color") if f in attrs]
    return " ".join([*words, attrs["shape"] + "s" if "shape" in attrs else noun])


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _pick(rng: np.random.Generator, seq: list | tuple):
    return seq[int(rng.random() * len(seq))]


def _key(attrs: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    return attrs.get("size"), attrs.get("color"), attrs.get("shape")


class _Facts:
    """Everything the question generators need, computed once per scene: attribute counts, unique referring
    expressions of every object, and the well-defined relations ``(anchor, direction, target)``."""

    def __init__(self, objects: list[ShapeObject], margin: float) -> None:
        self.objects = objects
        self.counts: Counter = Counter({(None, None, None): len(objects)})
        for o in objects:
            values = (o.size, o.color, o.shape)
            for mask in _COMBO_MASKS:
                self.counts[tuple(v if m else None for v, m in zip(values, mask))] += 1
        self.refs = [
            [
                r
                for r in ({f: getattr(o, f) for f in fields} for fields in _FIELD_COMBOS)
                if self.count(r) == 1
            ]
            for o in objects
        ]
        self._count_table: list | None = None
        self.relations = [
            (i, d, j)
            for i in range(len(objects))
            for d in DIRECTIONS
            if self.refs[i] and (j := relation_target(objects, i, d, margin)) is not None
        ]

    def count(self, attrs: dict[str, str]) -> int:
        return self.counts.get(_key(attrs), 0)

    def count_table(self) -> list[tuple[dict[str, str], int]]:
        if self._count_table is None:
            self._count_table = [(attrs, self.counts.get(key, 0)) for attrs, key in _COUNT_QUERIES]
        return self._count_table


# ----------------------------------------------------------------------------------------------- questions
# A generator returns (semantic key, question text, answer) or None; the key keeps two questions of a scene from
# asking the same thing in different words.
def _ask_attribute(rng, facts: _Facts, ask: str):
    cands = [(i, r) for i, refs in enumerate(facts.refs) for r in refs if ask not in r]
    if not cands:
        return None
    i, ref = _pick(rng, cands)
    noun = "object" if ask == "shape" else _pick(rng, ("shape", "object"))
    template = _pick(rng, (f"what {ask} is the {{}}?", f"what is the {ask} of the {{}}?"))
    return ("attr", i, ask), template.format(_phrase(ref, noun)), getattr(facts.objects[i], ask)


def _ask_color(rng, facts):
    return _ask_attribute(rng, facts, "color")


def _ask_shape(rng, facts):
    return _ask_attribute(rng, facts, "shape")


_COUNT_QUERIES = [
    (attrs, _key(attrs))
    for attrs in [{}]
    + [{"shape": s} for s in SHAPES]
    + [{"color": c} for c in COLORS]
    + [{"size": z} for z in SIZES]
    + [{"color": c, "shape": s} for c, s in product(COLORS, SHAPES)]
]


def _ask_count(rng, facts):
    counted = facts.count_table()
    value = _pick(rng, sorted({n for _, n in counted}))  # uniform over the distinct answers: spreads 0..5
    attrs, n = _pick(rng, [c for c in counted if c[1] == value])
    template = _pick(rng, ("how many {} are there?", "how many {} are in the image?"))
    text = template.format(_plural(attrs, _pick(rng, ("shapes", "objects"))))
    return ("count", _key(attrs)), text, str(n)


_EXIST_FIELDS = (("color", "shape"), ("color", "shape"), ("shape",), ("color",), ("size", "color", "shape"))
_EXIST_SPACE = {
    fields: [
        (a, _key(a)) for a in (dict(zip(fields, vals)) for vals in product(*(_VALUES[f] for f in fields)))
    ]
    for fields in set(_EXIST_FIELDS)
}


def _ask_exist(rng, facts):
    want_yes = bool(rng.random() < 0.5)
    for fields in (_pick(rng, _EXIST_FIELDS), ("color", "shape")):
        pool = [a for a, key in _EXIST_SPACE[fields] if (key in facts.counts) == want_yes]
        if pool:
            break
    attrs = _pick(rng, pool)
    template = _pick(rng, ("is there {a}?", "is there {a} in the image?", "are there any {p}?"))
    text = template.format(a=_a(_phrase(attrs)), p=_plural(attrs))
    return ("exist", _key(attrs)), text, "yes" if want_yes else "no"


def _ask_relation(rng, facts):
    if not facts.relations:
        return None
    i, d, j = _pick(rng, facts.relations)
    anchor, rel = _phrase(_pick(rng, facts.refs[i])), _pick(rng, _REL_PHRASES[d])
    if rng.random() < 0.5:
        return ("rel", i, d, "shape"), f"what shape is {rel} the {anchor}?", facts.objects[j].shape
    noun = _pick(rng, ("shape", "object"))
    return ("rel", i, d, "color"), f"what color is the {noun} {rel} the {anchor}?", facts.objects[j].color


_GENERATORS = {
    "color": _ask_color,
    "shape": _ask_shape,
    "count": _ask_count,
    "exist": _ask_exist,
    "relation": _ask_relation,
}


def _variants(truth: str) -> tuple[str, ...]:
    if truth.isdigit():
        word = NUMBER_WORDS[int(truth)] if int(truth) < len(NUMBER_WORDS) else truth
        return (word, word.capitalize(), truth + ".") + (("none",) if truth == "0" else ())
    if truth in ("yes", "no"):
        return (truth.capitalize(), truth + ".", truth.upper(), truth.capitalize() + "!")
    if truth in SHAPES:
        return (truth.capitalize(), "a " + truth, "A " + truth, truth + ".")
    return (truth.capitalize(), truth + ".", truth.capitalize() + ".")


def _wrong(truth: str) -> tuple[str, ...]:
    if truth.isdigit():
        n = int(truth)
        return tuple(str(m) for m in (n - 1, n + 1) if m >= 0)
    if truth in ("yes", "no"):
        return ("no",) if truth == "yes" else ("yes",)
    pool = SHAPES if truth in SHAPES else tuple(COLORS)
    return tuple(v for v in pool if v != truth)


def _dominant(answers: list[str], truth: str, need: int) -> bool:
    counts = Counter(answers)
    return counts[truth] >= need and all(n < counts[truth] for a, n in counts.items() if a != truth)


def human_answers(rng: np.random.Generator, truth: str, *, num: int = 10) -> list[str]:
    """``num`` seeded human-style answers: the truth, its surface variants, and ~8% plausible wrong answers.

    The exact string ``truth`` stays the single most common raw answer with at least 4 votes, so it is the
    ``multiple_choice_answer`` and earns full VQA accuracy.
    """
    variants, wrong = _variants(truth), _wrong(truth)
    u, v = rng.random(num).tolist(), rng.random(num).tolist()
    out = [
        wrong[int(b * len(wrong))]
        if a < _P_WRONG
        else variants[int(b * len(variants))]
        if a < _P_WRONG + _P_VARIANT
        else truth
        for a, b in zip(u, v)
    ]
    need = min(4, num)
    while not _dominant(out, truth, need):
        out[_pick(rng, [k for k, a in enumerate(out) if a != truth])] = truth
    return out


def make_questions(
    rng: np.random.Generator,
    objects: list[ShapeObject],
    *,
    image_id: int,
    count: int,
    margin: float,
    type_counts: Counter,
) -> list[dict]:
    """``count`` questions of a scene, each asking something different, with balanced types.

    Each slot takes the question type asked least so far in ``type_counts`` (the running count over the split,
    updated here; ties broken by a rotation that starts at ``image_id``) among the types that still have a new,
    well-defined question in this scene, so one-object scenes (no relation question possible) are compensated
    by the next scenes.
    """
    facts = _Facts(objects, margin)
    rotation = {t: (k - image_id) % len(QUESTION_TYPES) for k, t in enumerate(QUESTION_TYPES)}
    seen: set = set()
    out: list[dict] = []
    for _ in range(count):
        found = None
        for qtype in sorted(QUESTION_TYPES, key=lambda t: (type_counts[t], rotation[t])):
            for _ in range(4):
                qa = _GENERATORS[qtype](rng, facts)
                if qa is not None and qa[0] not in seen:
                    found = qtype, *qa
                    break
            if found:
                break
        if found is None:
            break
        qtype, key, text, truth = found
        seen.add(key)
        type_counts[qtype] += 1
        out.append(
            {
                "image_id": image_id,
                "question_id": image_id * 1000 + len(out),
                "question": text[0].upper() + text[1:],
                "answers": human_answers(rng, truth),
                "answer": truth,
                "question_type": qtype,
                "answer_type": ANSWER_TYPES[qtype],
            }
        )
    return out


# ------------------------------------------------------------------------------------------------ captions
def _describe(rng, obj: ShapeObject) -> str:
    fields = ("size", "color", "shape") if rng.random() < 0.5 else ("color", "shape")
    return _a(_phrase({f: getattr(obj, f) for f in fields}))


def _location(obj: ShapeObject, image_size: int) -> str:
    x, y = obj.center
    col = "left" if x < image_size / 3 else "right" if x > 2 * image_size / 3 else "center"
    row = "top" if y < image_size / 3 else "bottom" if y > 2 * image_size / 3 else "middle"
    if row == "middle":
        return "in the center of the image" if col == "center" else f"on the {col}"
    return f"at the {row}" if col == "center" else f"in the {row} {col} corner"


def _cap_inventory(rng, objects, image_size, margin):
    items = [_describe(rng, o) for o in objects]
    if len(items) == 1:
        return f"there is only one shape: {items[0]}"
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return f"there are {NUMBER_WORDS[len(items)]} shapes: {listed}"


def _cap_relation(rng, objects, image_size, margin):
    pairs = [
        (a, b, d)
        for a, b in product(objects, objects)
        for d in DIRECTIONS
        if a is not b and side_offset(a, b, d) > 2 * margin
    ]
    if not pairs:
        return None
    a, b, d = _pick(rng, pairs)
    rel = _pick(rng, ("to the left of", "left of")) if d == "left" else d
    rel = _pick(rng, ("to the right of", "right of")) if d == "right" else rel
    prefix = _pick(rng, ("", "there is ", "a picture of "))
    return f"{prefix}{_describe(rng, a)} {rel} {_describe(rng, b)}"


def _cap_location(rng, objects, image_size, margin):
    obj = _pick(rng, objects)
    return f"{_describe(rng, obj)} {_location(obj, image_size)}"


def _cap_groups(rng, objects, image_size, margin):
    key = _pick(rng, ("shape", "color"))
    counts = Counter(getattr(o, key) for o in objects)
    parts = []
    for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        noun = (value + ("s" if n > 1 else "")) if key == "shape" else f"{value} shape{'s' if n > 1 else ''}"
        parts.append(f"{_pick(rng, ('a', 'one')) if n == 1 else NUMBER_WORDS[n]} {noun}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return listed + _pick(rng, ("", " on a gray background", " on a plain background"))


def _cap_generic(rng, objects, image_size, margin):
    n = len(objects)
    if n == 1:
        obj = objects[0]
        return f"a single {_phrase({'size': obj.size, 'color': obj.color, 'shape': obj.shape})} on a gray background"
    colors = len({o.color for o in objects})
    adjective = "colorful" if colors > 1 else objects[0].color
    return _pick(
        rng,
        (
            f"{NUMBER_WORDS[n]} {adjective} shapes on a gray background",
            f"a simple picture of {NUMBER_WORDS[n]} geometric shapes",
            f"an image with {NUMBER_WORDS[n]} {adjective} shapes",
        ),
    )


_CAPTIONERS = (_cap_inventory, _cap_relation, _cap_location, _cap_groups, _cap_generic)


def make_captions(
    rng: np.random.Generator, objects: list[ShapeObject], *, image_size: int, margin: float, count: int = 5
) -> list[str]:
    """``count`` distinct captions of a scene drawn from five template families (inventory, relation, ...)."""
    captions: list[str] = []
    for _ in range(8):
        for k in rng.permutation(len(_CAPTIONERS)):
            text = _CAPTIONERS[int(k)](rng, objects, image_size, margin)
            if text is not None and text not in captions:
                captions.append(text)
            if len(captions) == count:
                return captions
    while len(captions) < count:  # tiny scenes can run out of distinct templates
        captions.append(f"a gray image with {_describe(rng, objects[0])} {_location(objects[0], image_size)}")
    return captions[:count]
