"""build_word_tokenizer: vocabulary, special tokens, [CLS]/[SEP] template, save_pretrained round trip, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from vlblocks.data import SPECIAL_TOKENS, ShapesWorld, build_word_tokenizer

CORPUS = [
    "What color is the circle?",
    "How many red shapes are there?",
    "Is there a red circle?",
    "a RED circle",
]


def test_vocabulary_and_special_tokens() -> None:
    tok = build_word_tokenizer(CORPUS)
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(7))
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3)
    assert (tok.bos_token, tok.eos_token, tok.mask_token) == ("[BOS]", "[EOS]", "[MASK]")
    # most frequent first: "red" (3) and "circle" (3), "?" (3); ties alphabetical
    assert [tok.convert_ids_to_tokens(i) for i in (7, 8, 9)] == ["?", "circle", "red"]
    assert len(tok) == 7 + len({w for w in " ".join(CORPUS).lower().replace("?", " ? ").split()})


def test_encoding_words_punctuation_and_unknowns() -> None:
    tok = build_word_tokenizer(CORPUS)
    ids = tok("Is there a BLUE circle?")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "is", "there", "a", "[UNK]", "circle", "?", "[SEP]"]
    pair = tok("red?", "circle")["input_ids"]
    assert tok.convert_ids_to_tokens(pair) == ["[CLS]", "red", "?", "[SEP]", "circle", "[SEP]"]
    assert tok.convert_ids_to_tokens(tok("[MASK] circle")["input_ids"])[1] == "[MASK]"  # specials stay whole
    batch = tok(["what color", "how many red shapes are there"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"} and batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, 4:].eq(0).all() and batch["attention_mask"][0].tolist() == [1] * 4 + [0] * 4
    assert tok.decode(batch["input_ids"][1], skip_special_tokens=True) == "how many red shapes are there"


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    world = ShapesWorld("train", num_scenes=20)
    tok = build_word_tokenizer([q["question"] for q in world.vqa()])
    tok.save_pretrained(tmp_path)
    questions = [world.vqa()[k]["question"] for k in range(0, 100, 7)]
    expected = tok(questions, padding=True)
    for loaded in (
        PreTrainedTokenizerFast.from_pretrained(tmp_path),
        AutoTokenizer.from_pretrained(tmp_path),
    ):
        assert loaded(questions, padding=True) == expected
        assert (
            loaded.get_vocab() == tok.get_vocab()
            and loaded.pad_token == "[PAD]"
            and loaded.bos_token == "[BOS]"
        )


def test_options_min_freq_lowercase_max_vocab() -> None:
    assert "color" not in build_word_tokenizer(CORPUS, min_freq=2).get_vocab()
    cased = build_word_tokenizer(CORPUS, lowercase=False).get_vocab()
    assert "RED" in cased and "red" in cased and "What" in cased
    small = build_word_tokenizer(CORPUS, max_vocab=10)
    assert len(small) == 10 and small.convert_ids_to_tokens(small("shapes")["input_ids"])[1] == "[UNK]"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"texts": "a red circle"}, TypeError, "single str"),
        ({"texts": []}, ValueError, "texts is empty"),
        ({"texts": [1, 2]}, TypeError, "texts must hold str"),
        ({"texts": CORPUS, "min_freq": 0}, ValueError, "min_freq"),
        ({"texts": CORPUS, "max_vocab": 7}, ValueError, "max_vocab"),
    ],
)
def test_errors(kwargs: dict, error: type, match: str) -> None:
    texts = kwargs.pop("texts")
    with pytest.raises(error, match=match):
        build_word_tokenizer(texts, **kwargs)


def test_tokenizers_is_not_imported_directly() -> None:
    """`tokenizers` is not a declared dependency: vlblocks reaches it only through transformers."""
    import ast
    from pathlib import Path

    import vlblocks

    offenders = []
    for path in Path(vlblocks.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tokenizers"]
    assert offenders == []
