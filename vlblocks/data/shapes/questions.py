"""ShapesWorld questions: VQA v2-style questions with ten human-style answers, computed from a scene's objects.

The question types follow the CLEVR-style programs of Johnson et al., "CLEVR: A Diagnostic Dataset for
Compositional Language and Elementary Visual Reasoning" (CVPR 2017), kept to five families (color, shape,
count, exist, relation), and the answers follow the VQA v2 annotation form of Goyal et al., "Making the V in VQA
Matter" (CVPR 2017): ten human answers per question, mostly the true answer written in varied surface forms
("2" / "two", "yes" / "Yes." / "a circle") plus an occasional wrong answer, so the official answer
normalisation matters. Every question has exactly one correct answer computed from the scene's objects:

- referring expressions ("the red circle", "the small shape") are only used when exactly one object matches;
- relation questions use ``relation_target`` (one object on that side, none within ``margin`` of the anchor).

Types are balanced within each scene, from the scene's own random stream only (no state shared between scenes,
so adding a question type changes no other scene): the slots take the types in a random order; a scene where
relations are well defined asks a second relation question (instead of a count or exist question, which every
scene can ask) with probability ``EXTRA_RELATION``; this makes up for the scenes (one object, crowded rows) that
cannot ask one, whose relation slot goes to the next type of their order.

Shape legend: S image side in pixels; all coordinates are pixels, x to the right and y downwards.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations, product

import numpy as np

from vlblocks.data.shapes.objects import (
    COLORS,
    DIRECTIONS,
    NUMBER_WORDS,
    SHAPES,
    SIZES,
    ShapeObject,
    noun_phrase,
    pick,
    plural_phrase,
    relation_target,
    with_article,
)

__all__ = ["ANSWER_TYPES", "EXTRA_RELATION", "QUESTION_TYPES", "human_answers", "make_questions"]

QUESTION_TYPES = ("color", "shape", "count", "exist", "relation")
ANSWER_TYPES = {"color": "other", "shape": "other", "count": "number", "exist": "yes/no", "relation": "other"}
EXTRA_RELATION = 0.4  # chance of a second relation question where relations exist (see the module docstring)

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
    i, ref = pick(rng, cands)
    noun = "object" if ask == "shape" else pick(rng, ("shape", "object"))
    template = pick(rng, (f"what {ask} is the {{}}?", f"what is the {ask} of the {{}}?"))
    return ("attr", i, ask), template.format(noun_phrase(ref, noun)), getattr(facts.objects[i], ask)


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
    value = pick(rng, sorted({n for _, n in counted}))  # uniform over the distinct answers: spreads 0..5
    attrs, n = pick(rng, [c for c in counted if c[1] == value])
    template = pick(rng, ("how many {} are there?", "how many {} are in the image?"))
    text = template.format(plural_phrase(attrs, pick(rng, ("shapes", "objects"))))
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
    for fields in (pick(rng, _EXIST_FIELDS), ("color", "shape")):
        pool = [a for a, key in _EXIST_SPACE[fields] if (key in facts.counts) == want_yes]
        if pool:
            break
    attrs = pick(rng, pool)
    template = pick(rng, ("is there {a}?", "is there {a} in the image?", "are there any {p}?"))
    text = template.format(a=with_article(noun_phrase(attrs)), p=plural_phrase(attrs))
    return ("exist", _key(attrs)), text, "yes" if want_yes else "no"


def _ask_relation(rng, facts):
    if not facts.relations:
        return None
    i, d, j = pick(rng, facts.relations)
    anchor, rel = noun_phrase(pick(rng, facts.refs[i])), pick(rng, _REL_PHRASES[d])
    if rng.random() < 0.5:
        return ("rel", i, d, "shape"), f"what shape is {rel} the {anchor}?", facts.objects[j].shape
    noun = pick(rng, ("shape", "object"))
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
        out[pick(rng, [k for k, a in enumerate(out) if a != truth])] = truth
    return out


def _type_order(rng: np.random.Generator, facts: _Facts) -> list[str]:
    """The types in a random order; see the module docstring for the extra relation question."""
    order = [QUESTION_TYPES[int(k)] for k in rng.permutation(len(QUESTION_TYPES))]
    if facts.relations and rng.random() < EXTRA_RELATION:
        last = next(k for k in range(len(order) - 1, -1, -1) if order[k] in ("count", "exist"))
        order[last] = "relation"  # count and exist, always askable, give way
    return order


def _new_question(rng, facts: _Facts, types: list[str], seen: set):
    """(type, key, text, answer) of a question not asked yet, of the first type in ``types`` that has one."""
    for qtype in dict.fromkeys(types):
        for _ in range(4):
            qa = _GENERATORS[qtype](rng, facts)
            if qa is not None and qa[0] not in seen:
                return (qtype, *qa)
    return None


def make_questions(
    rng: np.random.Generator,
    objects: list[ShapeObject],
    *,
    image_id: int,
    count: int,
    margin: float,
) -> list[dict]:
    """Up to ``count`` questions of a scene, each asking something different, with balanced types.

    ``rng`` is the scene's own question stream; nothing outside the scene is read or written.
    """
    facts = _Facts(objects, margin)
    seen: set = set()
    out: list[dict] = []
    order = _type_order(rng, facts)
    for slot in range(count):
        # slot k asks type order[k] (cycled); when the scene has no new question of it, the next types in order
        found = _new_question(rng, facts, [order[(slot + j) % len(order)] for j in range(len(order))], seen)
        if found is None:
            break
        qtype, key, text, truth = found
        seen.add(key)
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
