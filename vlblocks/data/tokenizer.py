"""A word-level tokenizer built from a corpus, as a ``transformers.PreTrainedTokenizerFast``.

Small closed-vocabulary tasks (ShapesWorld questions and captions, the VQA baselines of Antol et al., "VQA:
Visual Question Answering", ICCV 2015) need no subword model: every word seen at least ``min_freq`` times is a
token. The tokenizer is built with the ``tokenizers`` library (NFKC + lowercase normaliser, a pre-tokenizer that
splits on whitespace and isolates every punctuation character, a WordLevel model) and wrapped in
``PreTrainedTokenizerFast`` so it pads, truncates, saves with ``save_pretrained`` and loads with
``PreTrainedTokenizerFast.from_pretrained(path)`` like any Hugging Face tokenizer. Encoding adds
``[CLS] ... [SEP]`` (pairs: ``[CLS] a [SEP] b [SEP]``); decoders use ``bos_token`` / ``eos_token`` themselves.

Special tokens and ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [BOS]=4, [EOS]=5, [MASK]=6; words follow, most
frequent first (ties alphabetical). Shape legend: B texts, T tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_word_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]", "[MASK]")


def _pipeline(lowercase: bool) -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    steps = [normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()]
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    return normalizers.Sequence(steps), pre


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
    if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
        raise ValueError(f"min_freq must be a positive int, got {min_freq!r}")
    if max_vocab is not None and (not isinstance(max_vocab, int) or max_vocab <= len(SPECIAL_TOKENS)):
        raise ValueError(
            f"max_vocab must be None or an int > {len(SPECIAL_TOKENS)} (the special tokens), got {max_vocab!r}"
        )
    normalizer, pre = _pipeline(lowercase)
    counts: Counter = Counter()
    num_texts = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got {type(text).__name__}")
        num_texts += 1
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    if num_texts == 0:
        raise ValueError("texts is empty: need at least one text to build a vocabulary")
    words = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
    words = [w for w in words if w not in SPECIAL_TOKENS]
    if max_vocab is not None:
        words = words[: max_vocab - len(SPECIAL_TOKENS)]
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}

    from transformers import PreTrainedTokenizerFast  # imported here: importing transformers takes seconds

    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
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
