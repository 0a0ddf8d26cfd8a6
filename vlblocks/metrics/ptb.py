"""coco-caption's caption tokenizer in pure Python: Stanford ``PTBTokenizer`` (CoreNLP 3.4.1) + punctuation removal.

coco-caption (pycocoevalcap) runs ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase`` on all captions (one per line) and then drops the tokens ``'' ' `` ` -LRB- -RRB- -LCB-
-RCB- . ? ! , : - -- ... ;``. This module re-implements that lexer (a JFlex scanner: at each position the longest
match over all rules wins, ties go to the earlier rule; some rules look ahead at what follows) as a list of
regular expressions, following the Penn Treebank conventions of Marcus et al. (1993) as the jar applies them:
``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``, ``"`` -> `````` / ``''``, ``(`` -> ``-LRB-``, ``[`` -> ``-LSB-``,
``...`` -> ``...``, ``--`` dashes, ``£`` -> ``#``, abbreviations kept with their period (``mr.``, ``a.``).

Quirks reproduced: the jar lower-cases *after* escaping, so ``-lrb-`` / ``-rrb-`` / ``-lsb-`` ... survive
coco-caption's punctuation filter (it lists the upper-case forms); an abbreviation such as ``etc.`` or ``co.``
followed by an upper-case word (or two spaces) also yields a separate ``.``; the lexer sees the next caption
(coco-caption writes them all to one file), so the batch form tokenises the captions as one stream exactly as
coco-caption does, and a caption's tokens can depend on the first letter of the next one.
Characters the lexer does not know (emoji, most symbols outside the BMP) are deleted.

Shape legend: none (strings in, strings out).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, lru_cache

__all__ = ["PTB_PUNCTUATION", "ptb_tokenize", "ptb_tokenize_batch", "ptb_tokens"]

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


@cache
def _letter_class() -> str:
    """A regex class body of the BMP characters Java's ``Character.isLetter`` accepts (Unicode category L*)."""
    bmp = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x10000)))
    codes = [ord(c) for c in bmp if c.isalpha()]  # str.isalpha is exactly the categories Lu Ll Lt Lm Lo
    ranges, start = [], codes[0]
    for prev, cp in zip(codes, codes[1:]):
        if cp != prev + 1:
            ranges.append((start, prev))
            start = cp
    ranges.append((start, codes[-1]))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges
    )


def _i(words: str) -> str:
    """Case-insensitive alternation of literal words (JFlex %caseless), longest first."""
    alts = sorted(words.split("|"), key=len, reverse=True)
    return "(?i:" + "|".join(alts) + ")"


# Characters the lexer also accepts inside words (combining marks and a few letter-like ranges).
_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385\u03cf\u03f6"
    "\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4"
    "\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f"
    "\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963"
    "\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f"
    "\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44"
    "\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
_MISC = (
    "\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4"
    "\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f"
    "\u2020-\u2023\u2032-\u2038\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2116\u2190-\u21ff\u2200-\u22ff"
    "\u2300-\u23ff\u2600-\u26ff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
)


# Capitalised words after which an acronym's period also ends the sentence ("U.S. The" -> "u.s." ".").
_SENTENCE_STARTERS = "|".join(
    w[0] + "(?i:" + re.escape(w[1:]) + ")" if len(w) > 1 else w
    for w in (
        "About According Additionally After An A As At But Earlier He Her Here However If In It Last Many More Mr. Ms."
        " Now Once One Other Our She Since So Some Such That The Then There These They This We When While What Yet You"
    ).split()
)


def _patterns() -> list[tuple[str, str]]:
    """(action, regex) of every lexer rule in priority order; a group ``t`` marks the token inside its context."""
    letter = f"[{_letter_class()}]"
    splet = r"&[aeiouAEIOU](?i:acute|grave|uml);"
    wl = f"(?:[{_letter_class()}{_EXTRA}]|{splet})"
    wld = f"(?:[{_letter_class()}{_EXTRA}0-9\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u07c0-\u07c9]|{splet})"
    word = f"{wl}{wld}*(?:[.!?]{wl}{wld}*)*"  # "etc.The" and "e.g" (before a final period) are one word
    digit = r"[0-9\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u07c0-\u07c9]"
    alnum = f"(?:{letter}|{digit})"
    space = r"[ \t\u00a0\u2000-\u200a\u3000]"
    newline = r"(?:\r\n|[\r\n\u2028\u2029\u000b\u000c\u0085])"
    spacenl = f"(?:{space}|{newline})"
    sgml = r"<\/?[A-Za-z!][^>\n]*>"
    sentend = f"{spacenl}(?:{spacenl}|[A-Z]|{sgml})"
    apos = r"(?:['\u0092\u2019]|&apos;)"
    aposx = rf"(?:{apos}|[\u0091\u2018\u201b])"
    redaux = rf"{apos}(?:[msdMSD]|(?i:re|ve|ll))"
    num = rf"(?:{digit}*(?:[.:,\u00ad\u066b\u066c]{digit}+)+|{digit}+)"
    number = rf"[\-+]?{num}"
    hyphen = r"[-_\u058a\u2010\u2011]"
    acro = r"[A-Za-z](?:\.[A-Za-z])+|(?i:canada|sino|korean|eu|japan|non)-(?i:u)\.(?i:s)|(?i:u\.s\.-(?:u\.k|u\.s\.s\.r))"
    abmonth = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
    abdays = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
    abstate = (
        "Ala|Ariz|Calif|Colo|Conn|Dak|Del|Fla|Ga|Ind|Kans?|Ky|La|Md|Mich|Minn|Mo|Mont|Neb|Nev|Okla|Pa|Penn|Tenn"
        "|Tex|Va|Vt|Wisc?|Wyo"
    )
    abcomp = "Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys"
    abnum = "Nos?|Prop|Ph|tel|est|ext|sq|ft"
    abptit = r"Jr|Sr|Bros|Ed\.D|Ph\.D|Blvd|Rd|Esq"
    abbrev1 = (
        "(?:"
        + _i(f"{abmonth}|{abdays}|{abstate}|{abcomp}|{abnum}|{abptit}|etc|al|seq")
        + r"|A(?i:rk)|I(?i:ll)|M(?i:ass)|M(?i:iss)|O(?i:re)|W(?i:ash))\."
    )
    abtitle = (
        "Mr|Mrs|Ms|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Mt|Capt|Ste?"
        "|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det"
    )
    abbrev4 = (
        rf"(?:{acro}|[A-Za-z]|"
        + _i(f"{abtitle}|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Invt|Elec|Natl|M[ft]g")
        + r"|M(?i:iss))"
    )
    apoword = (
        rf"{apos}(?i:n){apos}?|[lLdDjJ]{apos}|(?i:dunkin){apos}|(?i:somethin){apos}|(?i:ol){apos}|{apos}(?i:em)"
        rf"|[A-HJ-XZn]{aposx}{letter}{{2}}{letter}*|{apos}[2-9]0(?i:s)|{apos}(?i:till?)"
        rf"|{letter}+[aeiouyAEIOUY]{aposx}[aeiouA-Z]{letter}*|{apos}(?i:cause)|(?i:cont'd\.?|'twas|nor'easter"
        r"|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)"
    )
    thing = rf"(?:[dDoOlL]{aposx}{alnum})?{alnum}+(?:{hyphen}(?:[dDoOlL]{aposx}{alnum})?{alnum}+)*"
    hthing = r"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|(?:" + acro + r")\.))+"
    thinga = r"[A-Z]+(?:(?:[+&]|&(?i:amp);)[A-Z]+)+"
    url_end = r"[^ \t\n\f\r\"<>|.!?(){},-]"
    quotes = (
        r"''|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f"
        r"\u2039\u203a\u00ab\u00bb]{1,2}|(?:['\u0092\u2019]|&apos;)"
    )
    return [
        ("assimilation", r"(?i:cannot|gimme|gonna|gotta|lemme|more'n|wanna)"),
        ("assimilation", r"'(?i:tis|twas)"),
        ("sgml", sgml),
        ("dash", r"&(?i:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]"),
        ("amp", r"&(?i:amp);"),
        ("tok", r"&(?i:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"),
        ("word", rf"(?P<t>{word}){redaux}"),
        ("word", rf"(?P<t>[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*)(?i:n){aposx}(?i:t)"),
        ("word", word),
        ("tok", apoword),
        ("tok", rf"(?P<t>y{apos}){letter}"),
        ("tok", rf"(?i:https?)://[^ \t\n\f\r\"<>|()]+{url_end}"),
        (
            "tok",
            r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},\-_$]+\.)+"
            rf"(?i:com|net|org|edu)))(?:/[^ \t\n\f\r\"<>|()]+{url_end})?",
        ),
        (
            "tok",
            r"[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
            r"[^ \t\n\f\r\"<>|(){}.\u00a0]+",
        ),
        ("right", rf"(?P<t>{redaux})[^A-Za-z]"),
        ("right", rf"(?i:n){aposx}(?i:t)"),
        ("tok", rf"{digit}{{1,2}}[\-/]{digit}{{1,2}}[\-/]{digit}{{2,4}}"),
        ("word", number),
        ("tok", r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"),
        ("frac", rf"(?:{digit}{{1,4}}[- \u00a0])?{digit}{{1,4}}(?:\\?/|\u2044){digit}{{1,4}}"),
        ("frac2", r"[\u00bc\u00bd\u00be\u2153-\u215e]"),
        (
            "amp",
            r"-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls)"
            rf"|(?i:cap){apos}(?i:n)|(?i:c){apos}(?i:est)",
        ),
        ("tok", r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"),
        ("tok", r"[A-Z]*\$|#"),
        (
            "currency",
            r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
        ),
        ("acronym", rf"(?P<t>(?:{acro}|[A-Za-z])\.){spacenl}+(?:{_SENTENCE_STARTERS}){spacenl}"),
        ("acronym", rf"(?P<t>{abbrev1}){sentend}"),
        ("tok", abbrev1),
        ("tok", rf"{abbrev4}\."),
        ("tok", rf"(?P<t>{abbrev4}){space}"),
        ("tok", rf"(?P<t>{acro}){spacenl}"),
        ("tok", rf"(?P<t>{apos}[0-9][0-9]){spacenl}"),
        ("word", rf"(?P<t>{word}\.)[,;:]"),
        ("phone", r"(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4}"),
        ("smiley", r"(?P<t>[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]])(?:[^A-Za-z]|$)"),
        ("left", r"(?P<t>\"|&(?i:quot);)[A-Za-z0-9$]"),
        ("right", r"\"|&(?i:quot);"),
        ("tok", r"\+|[%&\u2030\u2031]|~|\^|\||\\"),
        ("lsb", r"\["),
        ("rsb", r"\]"),
        ("tok", r"<+|&(?i:lt);|>+|&(?i:gt);"),
        ("lcb", r"\{"),
        ("rcb", r"\}"),
        ("lrb", r"\("),
        ("rrb", r"\)"),
        ("hyphens", r"-+"),
        ("ellipsis", r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026]"),
        ("tok", r"#[A-Za-z][A-Za-z0-9]*|@[A-Za-z][A-Za-z0-9_]*"),
        ("tok", r"@+|#+|_+"),
        ("tok", r"\*+|(?:\\\*){1,3}"),
        ("tok", r"[,;:]"),
        ("tok", r"[?!]+"),
        ("tok", r"[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]"),
        ("tok", r"="),
        ("tok", r"/"),
        ("word", rf"(?P<t>{hthing}\.)[,;:]"),
        ("word", hthing),
        ("tok", rf"(?P<t>{thing}\.)[,;:]"),
        ("tok", thing),
        ("amp", rf"(?P<t>{thinga}\.)[,;:]"),
        ("amp", thinga),
        ("left", r"(?P<t>')[A-Za-z][^ \t\n\r\u00a0]"),
        ("right", redaux),
        ("right", quotes),
        ("tok", f"[{_MISC}]"),
        ("skip", rf"\x00|{space}+|[\u200b\u200e\u200f\ufeff]|&(?i:nbsp);"),
        ("newline", newline),
        ("skip", r"(?s:.)"),
    ]


@cache
def _rules() -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((action, re.compile(pattern)) for action, pattern in _patterns())


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
    if action == "word":
        return tok.replace("\u00ad", ""), len(tok)
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
    rules = [p for a, p in _patterns() if a == "tok" and "\\." in p and "(?P<t>" not in p]
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
_LAST_WORD = re.compile(r"([A-Za-z]+)\.[ \t]*$")


def _line_tokens(lines: list[str]) -> list[list[str]]:
    """``ptb_tokens`` of the lines joined by newlines, line by line (tokens never span lines; the rules only look
    at the start of the next line), with plain captions split directly."""
    out = []
    lowered = "\n".join(lines).lower().split("\n")
    simple = _SIMPLE.fullmatch
    for i, (line, low) in enumerate(zip(lines, lowered)):
        if simple(low):
            toks = low.replace(",", " , ").replace(".", " . ").split()
            last = _LAST_WORD.search(line) if "." in low else None
            if _ASSIMILATIONS.isdisjoint(toks) and (last is None or not _is_abbreviation(last[1])):
                out.append(toks)
                continue
        j = i + 1
        while j < len(lines) and not lines[j].strip(" \t"):
            j += 1  # the rules may look through blank lines at the first word of the next one
        text = "\n".join(lines[i : j + 1]) + ("\n" if j + 1 < len(lines) else "")
        out.append(ptb_tokens(text, first_line_only=True)[0])
    return out


@lru_cache(maxsize=65536)
def _is_abbreviation(word: str) -> bool:
    return _abbreviation().fullmatch(word + ".") is not None


_OTHER_NEWLINES = str.maketrans(dict.fromkeys("\n\r\u2028\u2029\u000b\u000c", " "))


def ptb_tokenize_batch(captions: Sequence[Sequence[str]]) -> list[list[str]]:
    """coco-caption's ``PTBTokenizer.tokenize`` on a list of caption lists (one list per image).

    The captions are tokenised as one stream, one caption per line, like coco-caption's single Java call (a
    caption's line breaks become spaces first; coco-caption does this for ``\\n`` only and goes out of step on
    ``\\r`` and the other line separators). Returns the same nesting, each caption as space-joined tokens.
    """
    flat = [c.translate(_OTHER_NEWLINES) for caps in captions for c in caps]
    lines = _line_tokens(flat)
    kept = [" ".join(t for t in line if t not in PTB_PUNCTUATION) for line in lines]
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
