"""The lexer rules of Stanford CoreNLP 3.4.1's ``PTBLexer`` as Python regular expressions (used by ``ptb.py``).

Each rule is ``(action, regex)`` in the lexer's priority order; ``ptb.py`` takes, at each position, the longest match
over all rules (ties to the earlier rule), as JFlex does. A named group ``t`` marks the token inside a match whose
rest is look-ahead context (JFlex's ``r1/r2``: the context counts for the longest match but is not consumed).
JFlex's ``%caseless`` applies to literal text, not to character classes, hence the ``(?i:...)`` on literals only.
Rules follow the Penn Treebank tokenisation conventions (Marcus et al. 1993) as this version of the jar applies them.

Shape legend: none (regex strings).
"""

from __future__ import annotations

import re
from functools import cache

from vlblocks.metrics.ptb_charsets import DIGITS, LETTERS, SYMBOLS, WORD_EXTRA, code_points

__all__ = ["patterns"]


@cache
def _upper_class() -> str:
    """The upper-case characters (Java's ``Character.isUpperCase``: letters and a few symbols such as circled
    capitals), restricted to the letters the jar knows (``LETTERS``)."""
    letters = set(code_points(LETTERS))
    upper = [c for c in range(0x10000) if chr(c).isupper() and (c in letters or not chr(c).isalpha())]
    return "".join(re.escape(chr(c)) for c in upper if not 0xD800 <= c < 0xE000)


def _i(words: str) -> str:
    """Case-insensitive alternation of literal words (JFlex %caseless), longest first."""
    alts = sorted(words.split("|"), key=len, reverse=True)
    return "(?i:" + "|".join(alts) + ")"


# Characters the lexer also accepts inside words (combining marks and a few letter-like ranges; more in
# ptb_charsets.WORD_EXTRA, measured on the jar).
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


def patterns() -> list[tuple[str, str]]:
    """(action, regex) of every lexer rule in priority order; a group ``t`` marks the token inside its context."""
    letter = f"[{LETTERS}]"
    splet = r"&[aeiouAEIOU](?i:acute|grave|uml);"
    wl = f"(?:[{LETTERS}{_EXTRA}{WORD_EXTRA}]|{splet})"
    wld = (
        f"(?:[{LETTERS}{_EXTRA}{WORD_EXTRA}0-9\u0660-\u0669\u06f0-\u06f9\u0966-\u096f\u07c0-\u07c9]|{splet})"
    )
    word = f"{wl}{wld}*(?:[.!?]{wl}{wld}*)*"  # "etc.The" and "e.g" (before a final period) are one word
    digit = f"[0-9{DIGITS}]"
    alnum = f"(?:{letter}|{digit})"
    space = r"[ \t\u00a0\u2000-\u200a\u3000]"
    newline = r"(?:\r\n|[\r\n\u2028\u2029\u000b\u000c\u0085])"
    spacenl = f"(?:{space}|{newline})"
    sgml = r"<\/?[A-Za-z!][^>\n]*>"
    sentend = f"{spacenl}(?:{spacenl}|[{_upper_class()}]|{sgml})"  # Java's isUpperCase: "etc. \u00c9" too
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
            # ",-_" in the second class is JFlex's range 0x2c-0x5f (digits, upper case, "@"...), as in the jar
            r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
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
        # two characters of any kind as context: "co.a" is "co." "a" (5 > 4), "co.ab" stays a word (tie: earlier rule)
        ("tok", rf"(?P<t>{abbrev1})(?s:..)"),
        ("tok", abbrev1),
        ("tok", rf"{abbrev4}\."),
        ("tok", rf"(?P<t>{abbrev4}){space}"),
        ("tok", rf"(?P<t>{acro}){spacenl}"),
        ("tok", rf"(?P<t>{apos}[0-9][0-9]){spacenl}"),
        ("word", rf"(?P<t>{word}\.)[,;:]"),
        ("phone", r"(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4}"),
        ("smiley", r"(?P<t>[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]])(?:[^A-Za-z0-9]|$)"),
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
        ("tok", rf"#{letter}+|@[A-Za-z][A-Za-z0-9_]*"),
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
        ("tok", f"[{_MISC}{SYMBOLS}]"),
        ("skip", rf"\x00|{space}+|[\u200b\u200e\u200f\ufeff]|&(?i:nbsp);"),
        ("newline", newline),
        ("skip", r"(?s:.)"),
    ]
