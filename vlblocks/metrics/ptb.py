"""coco-caption's caption tokenizer in pure Python: Stanford ``PTBTokenizer`` (CoreNLP 3.4.1) + punctuation removal.

coco-caption (pycocoevalcap) runs ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase`` on all captions (one per line) and then drops the tokens ``'' ' `` ` -LRB- -RRB- -LCB-
-RCB- . ? ! , : - -- ... ;``. This module re-implements that lexer (a JFlex scanner: at each position the longest
match over all rules wins, ties go to the earlier rule; some rules look ahead at what follows) with the list of
regular expressions in ``ptb_rules.py``, following the Penn Treebank conventions of Marcus et al. (1993) as the jar applies them:
``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``, ``"`` -> `````` / ``''``, ``(`` -> ``-LRB-``, ``[`` -> ``-LSB-``,
``...`` -> ``...``, ``--`` dashes, ``£`` -> ``#``, abbreviations kept with their period (``mr.``, ``a.``).

Quirks reproduced: the jar lower-cases *after* escaping, so ``-lrb-`` / ``-rrb-`` / ``-lsb-`` ... survive
coco-caption's punctuation filter (it lists the upper-case forms); an abbreviation such as ``etc.`` or ``co.``
followed by an upper-case word (or two spaces) also yields a separate ``.``; the lexer sees the next caption
(coco-caption writes them all to one file), so the batch form tokenises the captions as one stream exactly as
coco-caption does, and a caption's tokens can depend on the first letter of the next one.
Characters the lexer does not know (emoji, most symbols outside the BMP, letters of later Unicode versions) are
deleted; which characters are letters, digits or symbol tokens for the jar is in ``ptb_charsets.py``, measured on
the jar itself.

Shape legend: none (strings in, strings out).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, lru_cache

from vlblocks.metrics.ptb_rules import patterns

__all__ = ["PTB_PUNCTUATION", "ptb_tokenize", "ptb_tokenize_batch", "ptb_tokens"]

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


@cache
def _rules() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((action, re.compile(pattern)) for action, pattern in patterns())


# The common case, decided without trying every rule: a run of ASCII letters followed by a space, the end or
# ", ", a comma followed by a space, or spaces. No rule matches longer there (``gonna`` is left to the rules).
_FAST = re.compile(
    r"(?P<w>[A-Za-z]+)(?=[ \t\n]|,[ \t\n]|,$|$)|(?P<c>,)(?=[ \t\n]|$)|(?P<s>[ \t]+)|(?P<n>\n)"
    r"|(?P<d>[A-Za-z]{2,})(?=\.(?:[ \t\n]|$))|(?P<p>\.)(?=\n|$|[ \t]+[^. \t\u00a0])"
)
_ASSIMILATIONS = frozenset(["cannot", "gimme", "gonna", "gotta", "lemme", "wanna"])
_LATEX_LEFT = {"'": "`", '"': "``", "&apos;": "`", "&quot;": "``"}
_LATEX_RIGHT = {"'": "'", '"': "''", "&apos;": "'", "&quot;": "''"}
_LATEX_ANY = str.maketrans(
    {
        **dict.fromkeys("\u0091\u2018\u201b\u2039", "`"),
        **dict.fromkeys("\u0092\u2019\u203a", "'"),
        **dict.fromkeys("\u0093\u201c\u00ab", "``"),
        **dict.fromkeys("\u0094\u201d\u00bb", "''"),
    }
)
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FIXED = {
    "lsb": "-LSB-",
    "rsb": "-RSB-",
    "lcb": "-LCB-",
    "rcb": "-RCB-",
    "lrb": "-LRB-",
    "rrb": "-RRB-",
    "dash": "--",
    "ellipsis": "...",
}
_AMP = re.compile(r"(?i:&amp;)")
_ENTITY_QUOTE = re.compile(r"(?i:&apos;|&quot;)|['\"]")


def _quote(tok: str, left: bool) -> str:
    table = _LATEX_LEFT if left else _LATEX_RIGHT
    tok = _ENTITY_QUOTE.sub(lambda m: table.get(m.group().lower(), m.group()), tok)
    return tok.translate(_LATEX_ANY)


def _act(action: str, tok: str) -> tuple[str | None, int]:
    """(token text or None for nothing, characters consumed) for a rule's matched token text."""
    if action in _FIXED:
        return _FIXED[action], len(tok)
    if action == "word":  # soft hyphens are dropped from words; a token of soft hyphens only becomes "-"
        return tok.replace("\u00ad", "") or "-", len(tok)
    if action in ("left", "right"):
        return _quote(tok, action == "left"), len(tok)
    if action == "amp":
        return _AMP.sub("&", tok), len(tok)
    if action in ("sgml", "frac"):
        return tok.replace(" ", "\u00a0"), len(tok)
    if action == "smiley":
        return tok.replace("(", "-LRB-").replace(")", "-RRB-"), len(tok)
    if action == "phone":
        return tok.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-"), len(tok)
    if action == "hyphens":
        return ("--" if 3 <= len(tok) <= 4 else tok), len(tok)
    if action == "assimilation":  # "gonna" -> "gon" "na", "cannot" -> "can" "not", "'tis" -> "'t" "is"
        keep = 3 if tok.lower() == "cannot" else 2 if tok.startswith("'") else len(tok) - 2
        return tok[:keep], keep
    if action == "acronym":  # "x." before a capitalised word: "x" then "."; "u.s." -> "u.s." then "."
        return (tok[0], 1) if len(tok) == 2 else (tok, len(tok) - 1)
    if action == "frac2":
        return _FRACTIONS.get(tok, tok), len(tok)
    if action == "currency":
        return _CURRENCY.get(tok, tok), len(tok)
    if action in ("skip", "newline"):
        return None, len(tok)
    return tok, len(tok)


def _longest(text: str, pos: int) -> tuple[str, str]:
    """(action, token text) of the rule with the longest match at ``pos`` (context included; ties: first rule)."""
    best, best_end = None, pos
    for action, rx in _rules():
        m = rx.match(text, pos)
        if m is not None and m.end() > best_end:
            best, best_end = (action, m), m.end()
    action, m = best  # type: ignore[misc]  # the last rule matches any character
    return action, m.group("t") if "t" in m.re.groupindex else m.group()


def _fast_ok(m: re.Match[str]) -> bool:
    """False where the fast path's word needs the full rules: an assimilation, or an abbreviation's period."""
    kind = m.lastgroup
    if kind == "d":
        return m.group().lower() not in _ASSIMILATIONS and _abbreviation().fullmatch(m.group() + ".") is None
    return kind != "w" or m.group().lower() not in _ASSIMILATIONS


@cache
def _abbreviation() -> re.Pattern[str]:
    """Every rule that could take a word together with its final period."""
    rules = [p for a, p in patterns() if a == "tok" and "\\." in p and "(?P<t>" not in p]
    return re.compile("|".join(f"(?:{p})" for p in rules))


def ptb_tokens(text: str, *, first_line_only: bool = False) -> list[list[str]]:
    """The jar's ``-preserveLines -lowerCase`` output for ``text``: one list of tokens per line, punctuation kept.

    With ``first_line_only``, stops at the first line break (the rest of ``text`` is only context).
    """
    lines: list[list[str]] = [[]]
    pos, end = 0, len(text)
    while pos < end:
        m = _FAST.match(text, pos)
        if m is not None and _fast_ok(m):
            kind = m.lastgroup
            if kind in ("w", "c", "d", "p"):
                lines[-1].append(m.group().lower())
            elif kind == "n":
                if first_line_only:
                    return lines
                lines.append([])
            pos = m.end()
            continue
        action, tok = _longest(text, pos)
        out, used = _act(action, tok)
        if action == "newline":
            if first_line_only:
                return lines
            lines.append([])
        elif out is not None:
            lines[-1].append(out.lower())
        pos += used
    return lines


# A caption of plain words, commas after words and an optional final period: its tokens are its words and
# punctuation marks, unless a word is an assimilation ("gonna") or the word before the period an abbreviation.
_SIMPLE = re.compile(r"[ \t]*(?:[A-Za-z]+,?[ \t]+)*(?:[A-Za-z]+,?[ \t]*)?\.?[ \t]*")
_NEWLINE_CHARS = re.compile("[\n\r\u2028\u2029\u000b\u000c]")
_OTHER_NEWLINES = str.maketrans(dict.fromkeys("\n\r\u2028\u2029\u000b\u000c", " "))


def _plain(line: str, low: str) -> str | None:
    """The tokenised caption (punctuation dropped) of a plain caption, None where the rules are needed."""
    words = low.replace(",", " ").replace(".", " ").split()
    if not _ASSIMILATIONS.isdisjoint(words):
        return None
    end = line.rstrip(" \t")
    if (
        end.endswith(".")
        and len(end) > 1
        and end[-2].isalpha()
        and _is_abbreviation(end[:-1].rsplit(None, 1)[-1])
    ):
        return None  # "a." / "etc." keep their period (and may see the next line)
    return " ".join(words)


def _tokenize_lines(lines: list[str]) -> list[str]:
    """coco-caption's tokenised caption of each line of the stream ``"\n".join(lines)``, line by line: tokens never
    span lines and the rules only look ahead at the start of the next non-blank line; plain captions (words, commas,
    a final period) are split directly."""
    out = []
    lowered = "\n".join(lines).lower().split("\n")
    simple = _SIMPLE.fullmatch
    for i, (line, low) in enumerate(zip(lines, lowered)):
        kept = _plain(line, low) if simple(low) else None
        if kept is None:
            j = i + 1
            while j < len(lines) and not lines[j].strip(" \t"):
                j += 1  # the rules may look through blank lines at the first word of the next one
            text = "\n".join(lines[i : j + 1]) + ("\n" if j + 1 < len(lines) else "")
            kept = " ".join(t for t in ptb_tokens(text, first_line_only=True)[0] if t not in PTB_PUNCTUATION)
        out.append(kept)
    return out


@lru_cache(maxsize=65536)
def _is_abbreviation(word: str) -> bool:
    return _abbreviation().fullmatch(word + ".") is not None


def ptb_tokenize_batch(captions: Sequence[Sequence[str]]) -> list[list[str]]:
    """coco-caption's ``PTBTokenizer.tokenize`` on a list of caption lists (one list per image).

    The captions are tokenised as one stream, one caption per line, like coco-caption's single Java call (a
    caption's line breaks become spaces first; coco-caption does this for ``\\n`` only and goes out of step on
    ``\\r`` and the other line separators). Returns the same nesting, each caption as space-joined tokens.
    """
    flat = [c for caps in captions for c in caps]
    if _NEWLINE_CHARS.search("".join(flat)):
        flat = [c.translate(_OTHER_NEWLINES) for c in flat]
    kept = _tokenize_lines(flat)
    out, i = [], 0
    for caps in captions:
        out.append(kept[i : i + len(caps)])
        i += len(caps)
    return out


def ptb_tokenize(text: str) -> str:
    """What coco-caption's ``PTBTokenizer`` turns one caption into: lower-cased PTB tokens, punctuation dropped.

    >>> ptb_tokenize("A man's dog, (isn't) it?")
    "a man 's dog -lrb- is n't -rrb- it"
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return ptb_tokenize_batch([[text]])[0][0]
