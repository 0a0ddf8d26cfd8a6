"""generate: HF parity (greedy, beam), KV cache vs recompute, left padding, early stop, cross-attentions, compile,
errors."""

from __future__ import annotations

import pytest
import torch

from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
from vlblocks.generation.search import decode_step, prefill, prepare

transformers = pytest.importorskip("transformers")

V, D, EOS, PAD = 23, 32, 5, 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(4)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=48, n_embd=D, n_layer=2, n_head=4, bos_token_id=1,
                                  eos_token_id=EOS, add_cross_attention=True)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # make eos likely, so rows end at different steps
        hf.transformer.wte.weight[EOS] *= 6.0
    folder = tmp_path_factory.mktemp("gpt2x")
    hf.save_pretrained(folder)
    return hf, GPT2Decoder.from_pretrained(folder).eval()


def _hf_generate(hf, ids, image, **kw):
    cfg = dict(max_new_tokens=8, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    cfg.update(kw)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), encoder_hidden_states=image,
                           generation_config=transformers.GenerationConfig(**cfg))


def _same_tokens(ours, theirs, pad=PAD):
    """HF trims to the longest row; the rest of ours must be padding."""
    n = theirs.shape[1]
    assert torch.equal(ours[:, :n], theirs)
    assert (ours[:, n:] == pad).all()


def test_greedy_equals_hf(models):
    hf, ours = models
    ids, image = torch.randint(6, V, (4, 3)), torch.randn(4, 5, D)
    out = ours.generate(image, ids, max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD)
    expected = _hf_generate(hf, ids, image)
    _same_tokens(out.sequences, expected)
    assert (out.sequences[:, 3:] == EOS).any()  # control: some rows end early


@pytest.mark.parametrize("penalty, ngram", [(1.5, 0), (1.0, 2)])
def test_greedy_with_penalties_equals_hf(models, penalty, ngram):
    hf, ours = models
    ids, image = torch.randint(6, V, (3, 4)), torch.randn(3, 5, D)
    out = ours.generate(image, ids, max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD,
                        repetition_penalty=penalty, no_repeat_ngram_size=ngram)
    expected = _hf_generate(hf, ids, image, repetition_penalty=penalty, no_repeat_ngram_size=ngram)
    _same_tokens(out.sequences, expected)


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (2.0, True), (0.5, "never")])
def test_beam_search_equals_hf(models, length_penalty, early_stopping):
    hf, ours = models
    ids, image = torch.randint(6, V, (3, 2)), torch.randn(3, 5, D)
    kw = dict(num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    out = ours.generate(image, ids, max_new_tokens=7, eos_token_id=EOS, pad_token_id=PAD, **kw)
    expected = _hf_generate(hf, ids, image, max_new_tokens=7, output_scores=True, return_dict_in_generate=True, **kw)
    _same_tokens(out.sequences, expected.sequences)
    torch.testing.assert_close(out.scores, expected.sequences_scores, atol=1e-4, rtol=1e-4)


def test_kv_cache_equals_full_recompute(models):
    _, ours = models
    ids, image = torch.randint(6, V, (2, 4)), torch.randn(2, 5, D)
    with torch.no_grad():
        prompt = prepare(ours, image, ids, None, 3)
        cache, logits, pos = prefill(ours, prompt)
        seq = ids
        for step in range(3):
            full = ours(seq, image).logits[:, -1]
            torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
            nxt = logits.argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
            slot = torch.tensor([4 + step])
            logits = decode_step(ours, cache, nxt, slot, pos + step + 1)


def test_left_padded_batch_equals_each_prompt_alone(models):
    _, ours = models
    prompts = [torch.randint(6, V, (1, n)) for n in (2, 5, 3)]
    image = torch.randn(3, 5, D)
    ids = torch.zeros(3, 5, dtype=torch.long)
    mask = torch.zeros(3, 5, dtype=torch.long)
    for i, pr in enumerate(prompts):
        ids[i, 5 - pr.shape[1]:] = pr
        mask[i, 5 - pr.shape[1]:] = 1
    for kw in (dict(), dict(num_beams=2), dict(repetition_penalty=1.3, no_repeat_ngram_size=2)):
        batch = ours.generate(image, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD,
                              **kw)
        for i, pr in enumerate(prompts):
            alone = ours.generate(image[i:i + 1], pr, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD, **kw)
            assert torch.equal(batch.sequences[i, 5:], alone.sequences[0, pr.shape[1]:]), (kw, i)
    # control: without the mask the padded rows read the pad tokens and their logits change
    with torch.no_grad():
        masked = ours(ids, image, attention_mask=mask).logits[:, -1]
        unmasked = ours(ids, image).logits[:, -1]
    assert not torch.allclose(masked[0], unmasked[0], atol=1e-4)


def test_sampling_seeded_and_early_stop(models):
    _, ours = models
    image = torch.randn(6, 5, D)
    kw = dict(max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, temperature=0.9, top_p=0.9, output_scores=True)
    a = ours.generate(image, generator=torch.Generator().manual_seed(1), **kw)
    b = ours.generate(image, generator=torch.Generator().manual_seed(1), check_every=2, **kw)
    c = ours.generate(image, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.sequences, c.sequences)
    assert a.sequences.shape == (6, 13) and torch.isfinite(a.scores).all()


def test_cross_attentions_shape_and_values(models):
    _, ours = models
    image, ids = torch.randn(2, 5, D), torch.randint(6, V, (2, 3))
    out = ours.generate(image, ids, max_new_tokens=4, return_cross_attentions=[1], eos_token_id=EOS)
    att = out.cross_attentions[1]
    assert list(out.cross_attentions) == [1] and att.shape == (2, 4, 4, 5)
    assert ours.transformer.h[1].crossattention.fused  # switched back
    # step 0's attention is the last prompt token's, recomputed by hand
    blk = ours.transformer.h[1]
    with torch.no_grad():
        tr = ours.transformer
        x = tr.drop(tr.wte(ids) + tr.wpe(torch.arange(3)))
        x = tr.h[0](x, cross_kv=tr.h[0].crossattention.project_context(image))
        x = x + blk.attn(blk.ln_1(x))
        q = blk.crossattention.q_attn(blk.ln_cross_attn(x))[:, -1].view(2, 4, 8)  # (B, H, Dh)
        k, _ = blk.crossattention.project_context(image)  # (B, H, Ni, Dh)
        expected = (torch.einsum("bhd,bhnd->bhn", q, k) * 8**-0.5).softmax(-1)
    torch.testing.assert_close(att[:, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 4))
    beams = ours.generate(image, ids, max_new_tokens=4, num_beams=2, return_cross_attentions=[0, 1], eos_token_id=EOS)
    assert beams.cross_attentions[0].shape == (2, 4, 4, 5)
    torch.testing.assert_close(beams.cross_attentions[1][:, 0], expected, atol=1e-5, rtol=1e-5)


def test_prefix_mode_generation_matches_cached_and_full():
    torch.manual_seed(0)
    cfg = GPT2DecoderConfig(vocab_size=V, n_positions=32, n_embd=D, n_layer=2, n_head=4, mode="prefix",
                            dim_image=12, bos_token_id=1, eos_token_id=EOS)
    model = GPT2Decoder(cfg).eval()
    image = torch.randn(2, 4, 12)
    out = model.generate(image, max_new_tokens=5, eos_token_id=EOS, pad_token_id=PAD)
    seq = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(5):
            seq = torch.cat([seq, model(seq, image).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    done = (seq[:, 1:] == EOS).cumsum(1) > 0
    expected = seq[:, 1:].masked_fill(done.roll(1, 1) & (torch.arange(5) > 0), PAD)
    assert torch.equal(out.sequences[:, 1:], expected)


def test_decode_step_compiles_fullgraph(models):
    _, ours = models
    image, ids = torch.randn(2, 5, D), torch.randint(6, V, (2, 3))
    with torch.no_grad():
        prompt = prepare(ours, image, ids, None, 4)
        cache, logits, pos = prefill(ours, prompt)
        from vlblocks.generation.sampling import sample_next_token

        def step(cache, tokens, slot, position, noise):
            return sample_next_token(decode_step(ours, cache, tokens, slot, position), top_p=0.8, noise=noise)

        compiled = torch.compile(step, fullgraph=True, dynamic=False, backend="eager")
        tok = logits.argmax(-1, keepdim=True)
        noise = torch.empty(2, V).exponential_(generator=torch.Generator().manual_seed(0))
        expected = step(cache, tok, torch.tensor([3]), pos + 1, noise)
        got = compiled(cache, tok, torch.tensor([3]), pos + 1, noise)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "kw, message",
    [(dict(top_p=0.0), "top_p must be a number in"), (dict(top_k=-2), "top_k must be a non-negative"),
     (dict(temperature=-1.0), "temperature must be >= 0"), (dict(num_beams=0), "num_beams must be a positive int"),
     (dict(max_new_tokens=60), "position budget n_positions=48"),
     (dict(image=torch.randn(2, 5, 7)), r"image_embeds must have shape \(B, Ni, 32\)"),
     (dict(return_cross_attentions=[5]), "return_cross_attentions must be an int in")],
)
def test_errors(models, kw, message):
    _, ours = models
    image = kw.pop("image", torch.randn(2, 5, D))
    kw.setdefault("max_new_tokens", 3)
    with pytest.raises(ValueError, match=message):
        ours.generate(image, torch.randint(6, V, (2, 3)), **kw)
