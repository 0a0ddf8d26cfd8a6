"""A word-level tokenizer built from a corpus, as a ``transformers.PreTrainedTokenizerFast``.

Small closed-vocabulary tasks (ShapesWorld questions and captions, the VQA baselines of Antol et al., "VQA:
Visual Question Answering", ICCV 2015) need no subword model: every word seen at least ``min_freq`` times is a
token. The tokenizer is written as a ``tokenizer.json`` specification (NFKC + lowercase normaliser, a pre-tokenizer
that splits on whitespace and isolates every punctuation character, a WordLevel model) and loaded by transformers'
``PreTrainedTokenizerFast`` (imported inside the function; vlblocks never imports ``tokenizers`` itself), so it pads, truncates, saves with ``save_pretrained`` and loads with
``PreTrainedTokenizerFast.from_pretrained(path)`` like any Hugging Face tokenizer. Encoding adds
``[CLS] ... [SEP]`` (pairs: ``[CLS] a [SEP] b [SEP]``); decoders use ``bos_token`` / ``eos_token`` themselves.

Special tokens and ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [BOS]=4, [EOS]=5, [MASK]=6; words follow, most
frequent first (ties alphabetical). Shape legend: B texts, T tokens.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vlblocks._checks import check_int

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_word_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]", "[MASK]")


def _spec(vocab: dict[str, int], lowercase: bool) -> dict:
    """The ``tokenizer.json`` of a word-level tokenizer over ``vocab`` (the format ``tokenizers`` serialises)."""
    steps = [{"type": "NFKC"}, {"type": "Lowercase"}] if lowercase else [{"type": "NFKC"}]
    pre = [{"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"}]

    def special(token: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, **flags} for t in SPECIAL_TOKENS],
        "normalizer": {"type": "Sequence", "normalizers": steps},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
            "pair": [
                special("[CLS]", 0),
                sequence("A", 0),
                special("[SEP]", 0),
                sequence("B", 1),
                special("[SEP]", 1),
            ],
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


def _load(vocab: dict[str, int], lowercase: bool) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast  # imported here: importing transformers takes seconds

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(json.dumps(_spec(vocab, lowercase)), encoding="utf-8")
        return PreTrainedTokenizerFast(
            tokenizer_file=str(path),
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            bos_token="[BOS]",
            eos_token="[EOS]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "attention_mask"],
            clean_up_tokenization_spaces=False,
        )


def build_word_tokenizer(
    texts: Iterable[str],
    *,
    min_freq: int = 1,
    lowercase: bool = True,
    max_vocab: int | None = None,
) -> PreTrainedTokenizerFast:
    """Build a word-level fast tokenizer from ``texts``.

    Args:
        texts: the corpus (e.g. every training question).
        min_freq: keep words seen at least this many times; rarer words encode as [UNK].
        lowercase: lowercase before splitting.
        max_vocab: total vocabulary size including the 7 special tokens (None: no limit).

    Returns:
        A ``PreTrainedTokenizerFast`` with pad / unk / cls / sep / bos / eos / mask tokens set;
        ``tokenizer(texts, padding=True, return_tensors="pt")`` gives input_ids and attention_mask (B, T).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of str, got a single str")
    min_freq = check_int("min_freq", min_freq, low=1)
    if max_vocab is not None:
        max_vocab = check_int("max_vocab", max_vocab, low=len(SPECIAL_TOKENS) + 1)
    specials = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    backend = _load(
        specials, lowercase
    ).backend_tokenizer  # the same normaliser and pre-tokenizer, for counting
    counts: Counter = Counter()
    num_texts = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got {type(text).__name__}")
        num_texts += 1
        normalized = backend.normalizer.normalize_str(text)
        counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
    if num_texts == 0:
        raise ValueError("texts is empty: need at least one text to build a vocabulary")
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
    words = [w for w in words if w not in SPECIAL_TOKENS]
    if max_vocab is not None:
        words = words[: max_vocab - len(SPECIAL_TOKENS)]
    return _load({token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}, lowercase)
