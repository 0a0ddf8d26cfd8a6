"""BLEU / CIDEr-D / ROUGE-L against pycocoevalcap: the published coco-fakecap figures, random corpora, errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.metrics.caption_peer import REFDATA, fakecap_dicts, need_java
from vlblocks.metrics import bleu, caption_scores, cider_d, rouge_l

peer_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
peer_cider = pytest.importorskip("pycocoevalcap.cider.cider")
peer_rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")

WORDS = "a an the dog cat man woman on in of with red blue sitting big small table near two".split()


def _peer(refs: dict, cands: dict):
    res = {k: [v] for k, v in cands.items()}
    b, bs = peer_bleu.Bleu(4).compute_score(refs, res, verbose=0)
    c, cs = peer_cider.Cider().compute_score(refs, res)
    r, rs = peer_rouge.Rouge().compute_score(refs, res)
    return b, np.array(bs).T, c, np.asarray(cs), r, np.asarray(rs)


def _random_corpus(rng: random.Random, images: int) -> tuple[dict, dict]:
    def sent() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 10, 12, 16, 25, 70])))

    refs = {f"img{i}": [sent() for _ in range(rng.randint(1, 6))] for i in range(images)}
    return refs, {k: sent() for k in refs}


def _assert_equal_to_peer(refs: dict, cands: dict) -> None:
    b, bs, c, cs, r, rs = _peer(refs, cands)
    out = caption_scores(refs, cands, tokenize=False)
    np.testing.assert_allclose(out.bleu.scores, b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.bleu.per_image, bs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.cider_d.score, c, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.cider_d.per_image, cs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.rouge_l.score, r, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.rouge_l.per_image, rs, rtol=0, atol=1e-9)


def test_thousands_of_random_captions_equal_pycocoevalcap():
    rng = random.Random(0)
    for images in (1, 2, 7, 1500):
        _assert_equal_to_peer(*_random_corpus(rng, images))


def test_text_holding_the_internal_sentinel_still_equals_pycocoevalcap():
    from vlblocks.metrics.caption_kernels import _SENTINEL

    refs = {1: [f"a {_SENTINEL} dog", "a dog"], 2: ["two cats", f"{_SENTINEL}"]}
    _assert_equal_to_peer(refs, {1: f"a dog {_SENTINEL}", 2: "two"})


def test_single_scorers_equal_caption_scores_and_controls():
    refs, cands = _random_corpus(random.Random(1), 40)
    both = caption_scores(refs, cands, tokenize=False)
    assert bleu(refs, cands, tokenize=False).scores == both.bleu.scores
    assert cider_d(refs, cands, tokenize=False).score == both.cider_d.score
    assert rouge_l(refs, cands, tokenize=False).score == both.rouge_l.score
    perfect = caption_scores(refs, {k: v[0] for k, v in refs.items()}, tokenize=False)
    assert perfect.rouge_l.score > both.rouge_l.score and perfect.bleu.scores[0] > both.bleu.scores[0]
    assert perfect.cider_d.score > both.cider_d.score


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.lists(st.sampled_from(WORDS[:6]), min_size=1, max_size=7).map(" ".join),
                min_size=1,
                max_size=4,
            ),
            st.lists(st.sampled_from(WORDS[:6]), max_size=7).map(" ".join),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_property_equal_to_pycocoevalcap(items):
    refs = {i: r for i, (r, _) in enumerate(items)}
    cands = {i: c for i, (_, c) in enumerate(items)}
    _assert_equal_to_peer(refs, cands)
    out = caption_scores(refs, cands, tokenize=False)
    assert np.all(out.rouge_l.per_image >= 0) and np.all(out.rouge_l.per_image <= 1 + 1e-12)
    assert np.all(out.bleu.per_image >= 0) and np.all(out.cider_d.per_image >= 0)


def test_rouge_splits_on_single_spaces_like_coco_caption():
    refs, cands = {1: ["a  b", ""], 2: ["c"]}, {1: "", 2: "c"}  # an empty string is one empty token for ROUGE
    _assert_equal_to_peer(refs, cands)
    assert rouge_l(refs, cands, tokenize=False).per_image[0] == 1.0  # "" vs "": LCS 1 of 1
    assert (
        rouge_l({1: ["a b"], 2: ["c"]}, cands, tokenize=False).per_image[0] == 0.0
    )  # control: no empty token


def test_fakecap_published_figures_to_every_printed_digit():
    references, candidates = fakecap_dicts()
    out = caption_scores(references, candidates).summary()
    printed = {k: f"{v:0.3f}" for k, v in out.items()}
    assert printed == {
        "Bleu_1": "0.579",
        "Bleu_2": "0.404",
        "Bleu_3": "0.279",
        "Bleu_4": "0.191",
        "ROUGE_L": "0.396",
        "CIDEr": "0.600",
    }


def test_fakecap_equals_pycocoevalcap_with_the_java_tokenizer():
    need_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    references, candidates = fakecap_dicts()
    gts_raw = {k: [{"caption": c} for c in v] for k, v in references.items()}
    res_raw = {k: [{"caption": candidates[k]}] for k in references}
    both = {**{("r", k): v for k, v in gts_raw.items()}, **{("c", k): v for k, v in res_raw.items()}}
    tok = PTBTokenizer().tokenize(both)  # one JVM start for both sides
    gts = {k: tok[("r", k)] for k in references}
    res = {k: tok[("c", k)][0] for k in references}
    _assert_equal_to_peer(gts, res)
    ours = caption_scores(references, candidates)
    peer = caption_scores(gts, res, tokenize=False)
    assert ours.bleu.scores == peer.bleu.scores and ours.cider_d.score == peer.cider_d.score


def test_clipscore_example_reference_metrics():
    import json

    folder = REFDATA / "clipscore-example"
    if not folder.is_dir():
        pytest.skip(f"shared reference data absent: {folder}")
    refs = json.loads((folder / "refs.json").read_text())
    expected = json.loads((folder / "reference_metrics.json").read_text())
    for name in ("good_captions", "bad_captions"):
        cands = json.loads((folder / f"{name}.json").read_text())
        out = caption_scores(refs, cands)
        exp = expected[name]
        np.testing.assert_allclose(out.bleu.scores, exp["Bleu"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.bleu.per_image.T, exp["Bleu_per_image"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.cider_d.per_image, exp["CIDEr_per_image"], rtol=0, atol=1e-12)
        assert abs(out.rouge_l.score - exp["ROUGE_L"]) < 1e-12


def test_results_list_and_per_image_dicts():
    refs = {1: ["a dog on a mat"], 2: ["two cats"]}
    as_list = [{"image_id": 2, "caption": "two cats"}, {"image_id": 1, "caption": "a dog"}]
    out = caption_scores(refs, as_list)
    assert out.cider_d.image_ids == (1, 2)
    per = out.per_image()
    assert set(per) == {1, 2} and set(per[1]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert per[2]["ROUGE_L"] == 1.0 and per[1]["ROUGE_L"] < 1.0
    assert out.bleu.as_dict()[2][0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("refs", "cands", "error", "match"),
    [
        ({1: ["a"]}, {2: "a"}, ValueError, "image id 1 has references but no candidate"),
        ({1: ["a"]}, {1: "a", 2: "b"}, ValueError, "image id 2 has a candidate caption but no references"),
        ({1: []}, {1: "a"}, ValueError, "image id 1 has an empty list of references"),
        ({1: ["a", 3]}, {1: "a"}, ValueError, "image id 1 has a non-string reference caption"),
        ({1: "a b"}, {1: "a"}, ValueError, "references of image id 1 must be a list of strings"),
        ({1: ["a"]}, {1: None}, ValueError, "image id 1 has a non-string candidate caption"),
        ({}, {}, ValueError, "references is empty"),
        (
            {1: ["a"]},
            [{"image_id": 1, "caption": "a"}] * 2,
            ValueError,
            "more than one caption for image id 1",
        ),
        ({1: ["a"]}, [{"image": 1}], ValueError, r"candidates\[0\] must be a dict with 'image_id'"),
        ({1: ["a"]}, "a", TypeError, "candidates must be a dict"),
        ([["a"]], {1: "a"}, TypeError, "references must be a dict"),
    ],
)
def test_errors(refs, cands, error, match):
    with pytest.raises(error, match=match):
        caption_scores(refs, cands)


def test_argument_errors():
    with pytest.raises(ValueError, match="n must be a positive int"):
        bleu({1: ["a"]}, {1: "a"}, n=0)
    with pytest.raises(ValueError, match="sigma must be a finite positive number"):
        cider_d({1: ["a"]}, {1: "a"}, sigma=-1.0)


def test_large_vocabulary_fallback_equals_pycocoevalcap(monkeypatch):
    """Token ids too wide for the 16-bit radix sort take the int64 stable sort, corpora too large for the bitmaps
    the sorted lookups; same numbers."""
    from vlblocks.metrics import caption_kernels

    refs, cands = _random_corpus(random.Random(3), 30)
    fast = caption_scores(refs, cands, tokenize=False)
    monkeypatch.setattr(caption_kernels, "_RADIX_VOCAB", 0)
    monkeypatch.setattr(caption_kernels, "_BITMAP_BITS", 0)  # (image, token) lookups by sorting, not a bitmap
    slow = caption_scores(refs, cands, tokenize=False)
    np.testing.assert_allclose(slow.cider_d.per_image, fast.cider_d.per_image, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slow.bleu.per_image, fast.bleu.per_image, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slow.rouge_l.per_image, fast.rouge_l.per_image, rtol=0, atol=1e-12)
    _assert_equal_to_peer(refs, cands)
