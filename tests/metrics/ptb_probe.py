"""Probe the real PTB tokenizer (coco-caption's jar) one character at a time, to measure its character classes.

The jar's lexer was generated with the Unicode tables of its day, so which characters are letters, which join a
word and which are one-character symbol tokens cannot be read off Python's (newer, version-dependent)
``unicodedata``. This tool runs every BMP code point c through the jar in two contexts, ``x{c}x`` and ``q {c} q``,
compares with ``vlblocks.metrics.ptb`` and sorts the disagreements into three kinds:

- the jar deletes c (``x x``) where vlblocks keeps it: a letter of a later Unicode version;
- the jar joins c into the word (``xcx``) where vlblocks does not: a word character (other scripts' digits, marks);
- the jar keeps c as its own token (``x c x``) where vlblocks deletes it: a symbol.

``python -m tests.metrics.ptb_probe`` prints the disagreements (none when ``ptb_charsets.py`` is up to date) and,
with ``--write``, the regenerated ``vlblocks/metrics/ptb_charsets.py`` tables (run it from the repository root).
The test ``test_caption_ptb.py::test_every_bmp_character_class_equals_the_jar`` runs the probe on a sample.
"""

from __future__ import annotations

import re
import sys

from tests.metrics.caption_peer import java_ptb_lines
from vlblocks.metrics.ptb import ptb_tokens

# characters that end a line for the jar or for coco-caption's file: they cannot be probed inside a line
UNPROBED = frozenset([0, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029, *range(0xD800, 0xE000)])


def _shape(line: str) -> str:
    return re.sub(r"[^ xq]+", "C", line)


def probe(code_points: list[int]) -> dict[str, list[int]]:
    """{kind: [code points]} where the jar and vlblocks disagree (kinds: letter, word, symbol, other)."""
    code_points = [c for c in code_points if c not in UNPROBED]
    lines = [s for c in code_points for s in (f"x{chr(c)}x", f"q {chr(c)} q")]
    java = java_ptb_lines(lines)
    ours = [" ".join(t) for t in ptb_tokens("\n".join(lines))]
    kinds: dict[str, list[int]] = {"letter": [], "word": [], "symbol": [], "other": []}
    for i, c in enumerate(code_points):
        j, o = java[2 * i : 2 * i + 2], ours[2 * i : 2 * i + 2]
        if j == o:
            continue
        shape = (_shape(j[0]), _shape(j[1]), _shape(o[0]), _shape(o[1]))
        kind = {
            ("x x", "q q", "xCx", "q C q"): "letter",
            ("xCx", "q C q", "x x", "q q"): "word",
            ("x C x", "q C q", "x x", "q q"): "symbol",
        }.get(shape, "other")
        kinds[kind].append(c)
    return kinds


def class_body(code_points: list[int]) -> list[str]:
    """A regex class body of ``code_points`` as ``\\uXXXX`` ranges, cut into source lines."""
    items, start = [], None
    cps = sorted(code_points)
    for k, c in enumerate(cps):
        start = c if start is None else start
        if k + 1 == len(cps) or cps[k + 1] != c + 1:
            items.append(f"\\u{start:04x}" if start == c else f"\\u{start:04x}-\\u{c:04x}")
            start = None
    lines, cur = [], ""
    for item in items:
        if len(cur) + len(item) > 104:
            lines.append(cur)
            cur = ""
        cur += item
    return [*lines, cur] if cur else lines


def main() -> None:
    kinds = probe(list(range(1, 0x10000)))
    for kind, cps in kinds.items():
        print(kind, len(cps), " ".join(f"{c:04x}" for c in cps[:40]))
    if "--write" in sys.argv:
        from vlblocks.metrics import ptb_charsets

        letters = set(ptb_charsets.code_points(ptb_charsets.LETTERS)) - set(kinds["letter"])
        word = set(ptb_charsets.code_points(ptb_charsets.WORD_EXTRA)) | set(kinds["word"])
        symbol = set(ptb_charsets.code_points(ptb_charsets.SYMBOLS)) | set(kinds["symbol"])
        for name, cps in (("LETTERS", letters), ("WORD_EXTRA", word), ("SYMBOLS", symbol)):
            print(f"{name} = (")
            print("\n".join(f'    "{line}"' for line in class_body(sorted(cps))))
            print(")")


if __name__ == "__main__":
    main()
