"""Caption presets: what each --peft mode trains (counted from gradients), starting from the pretrained language
model, prefix mode's LM head on text positions only, the soft prompt in generation, the trained-weights view, the
cached language model, and the preset's errors."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from vlblocks.data import ShapesWorld, build_word_tokenizer
from vlblocks.data.caption_batch import caption_tokens
from vlblocks.decoders import GPT2Decoder
from vlblocks.models.caption_lm import cached_language_model, caption_language_model
from vlblocks.models.caption_preset import (
    CaptionPreset,
    apply_caption_peft,
    build_captioner,
    caption_decoder_config,
)
from vlblocks.models.trained_view import TrainedView

SIZES = dict(
    image_size=32, patch_size=8, image_dim=16, image_depth=1, dim=32, depth=2, heads=2, max_length=24
)


@pytest.fixture(scope="module")
def tok():
    world = ShapesWorld("train", num_scenes=20, image_size=32)
    return build_word_tokenizer(c for caps in world.captions().references().values() for c in caps)


@pytest.fixture(scope="module")
def lm_state(tok):
    """A 'pretrained' language model: a random text-only decoder with non-trivial weights."""
    torch.manual_seed(1)
    lm = GPT2Decoder(caption_decoder_config(CaptionPreset(**SIZES), tok, image=False))
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return {k: v.clone() for k, v in lm.state_dict().items()}


def _model(tok, lm_state, **kw):
    preset = CaptionPreset(**SIZES, **kw)
    torch.manual_seed(0)
    model = build_captioner(preset, tokenizer=tok, lm_state=lm_state)
    apply_caption_peft(model, preset)
    return model, preset


def _batch(tok):
    torch.manual_seed(2)
    text = caption_tokens(
        tok, ["one shape: a large red circle", "two shapes: a small blue square"], max_length=24
    )
    return torch.randn(2, 3, 32, 32), text


def _grad_names(model, tok) -> set[str]:
    pixels, text = _batch(tok)
    model(pixels, text.input_ids, attention_mask=text.attention_mask, labels=text.labels).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name  # exactly the trainable ones get a gradient
    return {n for n, p in model.named_parameters() if p.grad is not None}


IMAGE_SIDE = r"image_encoder\..*|projector\..*"
READERS = {
    "cross": r"decoder\.transformer\.h\.\d\.(crossattention|ln_cross_attn)\..*",
    "prefix": r"decoder\.visual_(proj|norm)\..*",
}
PEFT = {
    "lora": r"decoder\.transformer\.h\.\d\.(attn|mlp)\.(c_attn|c_proj|c_fc)\.lora_[AB]",
    "adapter": r"decoder\.transformer\.h\.\d\.(attn|crossattention)\.c_proj\.adapter\..*",
    "prompt": r"decoder\.soft_prompt\.embedding",
}


@pytest.mark.parametrize("mode", ["cross", "prefix"])
@pytest.mark.parametrize("peft", ["full", "lora", "adapter", "prompt"])
def test_each_peft_mode_trains_only_what_it_should(tok, lm_state, peft, mode) -> None:
    model, _ = _model(tok, lm_state, peft=peft, mode=mode)
    names = _grad_names(model, tok)
    if peft == "full":
        assert names == {n for n, _ in model.named_parameters()}
        return
    allowed = [IMAGE_SIDE, READERS[mode], PEFT[peft]]
    assert all(any(re.fullmatch(a, n) for a in allowed) for n in names), sorted(names)
    for pattern in allowed:  # every kind of trained parameter is there
        assert any(re.fullmatch(pattern, n) for n in names), pattern
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "decoder.transformer.wte.weight" in frozen and "decoder.transformer.h.0.mlp.c_fc.weight" in frozen
    if (
        peft == "lora"
    ):  # golden count: per block r (in + out) over c_attn, attn.c_proj, c_fc, mlp.c_proj = 16 r D
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        assert lora == 2 * 16 * 16 * 32
    if peft == "prompt":
        assert model.decoder.soft_prompt.embedding.shape == (10, 32)


@pytest.mark.parametrize("peft", ["full", "lora", "adapter", "prompt"])
def test_cross_mode_starts_as_the_pretrained_language_model(tok, lm_state, peft) -> None:
    """At init the zero cross-attention output, LoRA's zero B and the adapters' zero up-projection leave the
    pretrained LM's logits unchanged (prompt: the LM reading the same soft prompt)."""
    model, preset = _model(tok, lm_state, peft=peft)
    lm = GPT2Decoder(caption_decoder_config(preset, tok, image=False))
    lm.load_state_dict(lm_state)
    lm.soft_prompt = model.decoder.soft_prompt  # None except for prompt tuning
    pixels, text = _batch(tok)
    with torch.no_grad():
        got = model.eval()(pixels, text.input_ids, attention_mask=text.attention_mask).logits
        want = lm.eval()(text.input_ids, attention_mask=text.attention_mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other, _ = _model(tok, {k: v * 1.1 for k, v in lm_state.items()}, peft=peft)  # control: another LM
    with torch.no_grad():
        assert not torch.allclose(other.eval()(pixels, text.input_ids).logits, want, atol=1e-3)


@pytest.mark.parametrize("peft", ["lora", "adapter", "prompt"])
def test_prefix_mode_starts_as_the_pretrained_language_model(tok, lm_state, peft) -> None:
    """Prefix mode: the PEFT captioner gives the logits of the pretrained LM reading the same visual prefix (and
    soft prompt) without any PEFT layer."""
    model, preset = _model(tok, lm_state, peft=peft, mode="prefix")
    torch.manual_seed(0)
    plain = build_captioner(preset, tokenizer=tok, lm_state=lm_state)  # no PEFT layers, same init
    plain.decoder.soft_prompt = copy.deepcopy(model.decoder.soft_prompt)
    pixels, text = _batch(tok)
    with torch.no_grad():
        got = model.eval()(pixels, text.input_ids, attention_mask=text.attention_mask).logits
        want = plain.eval()(pixels, text.input_ids, attention_mask=text.attention_mask).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for name, param in model.named_parameters():  # control: a non-zero PEFT update changes them
            if param.requires_grad and ("lora_B" in name or "adapter" in name or "soft_prompt" in name):
                param.add_(0.1)
        assert not torch.allclose(model(pixels, text.input_ids).logits, plain(pixels, text.input_ids).logits)


@pytest.mark.parametrize("mode", ["cross", "prefix"])
@pytest.mark.parametrize("peft", ["full", "lora", "adapter", "prompt"])
def test_every_mode_holds_the_pretrained_weights(tok, lm_state, peft, mode) -> None:
    model, _ = _model(tok, lm_state, peft=peft, mode=mode)
    own = model.decoder.state_dict()
    for key, value in lm_state.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)  # LoRA / adapters keep the base keys


@pytest.mark.parametrize("peft", ["full", "prompt"])
def test_prefix_mode_lm_head_sees_text_positions_only(tok, lm_state, peft) -> None:
    model, _ = _model(tok, lm_state, peft=peft, mode="prefix")
    seen = []
    model.decoder.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    pixels, text = _batch(tok)
    out = model(pixels, text.input_ids, attention_mask=text.attention_mask, labels=text.labels)
    assert seen == [torch.Size([2, text.input_ids.shape[1], 32])]  # not the 17 image (+ 10 prompt) positions
    assert out.logits.shape[:2] == text.input_ids.shape
    with torch.no_grad():  # control: the prefix reaches the text positions
        assert not torch.allclose(
            model(pixels * 0, text.input_ids).logits, model(pixels, text.input_ids).logits
        )


@pytest.mark.parametrize("mode", ["cross", "prefix"])
def test_soft_prompt_generation_matches_teacher_forcing(tok, lm_state, mode) -> None:
    model, _ = _model(tok, lm_state, peft="prompt", mode=mode)
    with torch.no_grad():
        model.decoder.soft_prompt.embedding.mul_(20)  # a prompt strong enough to matter
    pixels, _ = _batch(tok)
    with torch.no_grad():
        seq = model.eval().generate_ids(pixels, max_new_tokens=6, eos_token_id=len(tok) - 1).sequences
        logits = model(pixels, seq).logits  # the KV-cache path and the full recompute agree
    torch.testing.assert_close(logits[:, :-1].argmax(-1), seq[:, 1:])
    before = seq.clone()
    model.decoder.soft_prompt = None  # control: without the prompt the captions change
    with torch.no_grad():
        assert not torch.equal(model.generate_ids(pixels, max_new_tokens=6).sequences, before)


def test_trained_view_holds_the_trained_weights_only(tok, lm_state) -> None:
    model, preset = _model(tok, lm_state, peft="lora")
    view = TrainedView(model)
    keys = set(view.state_dict())
    assert any(k.startswith("image_encoder.") for k in keys) and "projector.weight" in keys
    assert "decoder.transformer.h.0.crossattention.c_attn.weight" in keys
    assert not any(
        "lora_" in k or k.startswith("decoder.transformer.wte") or ".attn.c_attn" in k for k in keys
    )
    assert list(view.parameters()) == []
    with torch.no_grad():
        model.projector.weight.add_(1.0)
    fresh, _ = _model(tok, lm_state, peft="lora")
    TrainedView(fresh).load_state_dict(view.state_dict())
    torch.testing.assert_close(fresh.projector.weight, model.projector.weight)
    with pytest.raises(ValueError, match="does not fit the view"):
        TrainedView(fresh).load_state_dict({"nope": torch.zeros(1)})


def test_cached_language_model_is_reused(tok, tmp_path) -> None:
    preset, said = CaptionPreset(**SIZES), []
    texts = ["one shape: a large red circle", "two shapes: a small blue square and a large red circle"]
    build = lambda: GPT2Decoder(caption_decoder_config(preset, tok, image=False))  # noqa: E731
    kw = dict(steps=3, batch_size=4, max_length=24, seed=0)
    first = cached_language_model(tmp_path, build, tok, texts, say=said.append, **kw)
    again = cached_language_model(tmp_path, build, tok, texts, say=said.append, **kw)
    assert "reusing" in said[-1] and torch.equal(
        first["transformer.h.0.attn.c_attn.weight"], again["transformer.h.0.attn.c_attn.weight"]
    )
    cached_language_model(tmp_path, build, tok, texts, say=said.append, **{**kw, "steps": 4})
    assert any("other settings" in s for s in said)
    fresh = build().state_dict()["transformer.h.0.attn.c_attn.weight"]
    assert not torch.equal(fresh, first["transformer.h.0.attn.c_attn.weight"])  # control: it did train


def test_caption_language_model_pretrains_the_presets_decoder_once_and_the_other_ranks_read_it(
    tok, tmp_path
) -> None:
    """caption_language_model = seed, then cached_language_model of the preset's text-only decoder; a non-main
    process (main=False) reads the cache the main one wrote, silently and without writing."""
    from vlblocks.training import seed_everything

    preset, said = CaptionPreset(**SIZES), []
    texts = ["one shape: a large red circle", "two shapes: a small blue square and a large red circle"]
    kw = dict(steps=3, lr=3e-3, seed=5)
    state = caption_language_model(preset, tok, texts, tmp_path / "lm", say=said.append, **kw)
    assert "pretraining" in said[0] and (tmp_path / "lm" / "model.safetensors").is_file()
    seed_everything(5)  # by hand: the same seed, decoder, settings (batches of 64, the preset's max_length)
    build = lambda: GPT2Decoder(caption_decoder_config(preset, tok, image=False))  # noqa: E731
    by_hand = cached_language_model(
        tmp_path / "manual",
        build,
        tok,
        texts,
        say=said.append,
        batch_size=64,
        max_length=preset.max_length,
        **kw,
    )
    assert state.keys() == by_hand.keys() and all(torch.equal(state[k], by_hand[k]) for k in state)
    stamp, heard = (tmp_path / "lm" / "model.safetensors").stat().st_mtime_ns, []
    other = caption_language_model(preset, tok, texts, tmp_path / "lm", main=False, say=heard.append, **kw)
    assert all(torch.equal(state[k], other[k]) for k in other) and heard == []  # tied weights stored once
    assert (tmp_path / "lm" / "model.safetensors").stat().st_mtime_ns == stamp  # read, not written again
    caption_language_model(preset, tok, texts, tmp_path / "lm", say=said.append, **kw)
    assert "reusing" in said[-1]
    reseeded = caption_language_model(
        preset, tok, texts, tmp_path / "lm6", say=said.append, **{**kw, "seed": 6}
    )
    assert not torch.equal(
        reseeded["transformer.h.0.attn.c_attn.weight"], state["transformer.h.0.attn.c_attn.weight"]
    )


def test_preset_errors() -> None:
    with pytest.raises(ValueError, match="peft"):
        CaptionPreset(peft="bitfit")
    with pytest.raises(ValueError, match="mode"):
        CaptionPreset(mode="both")
    with pytest.raises(ValueError, match="stem"):
        CaptionPreset(stem="hybrid")
    with pytest.raises(ValueError, match="lora_r must be >= 1 with peft='lora'"):
        CaptionPreset(peft="lora", lora_r=0)
    assert CaptionPreset(peft="full", lora_r=0).lora_r == 0


def test_conv_stem_vit_trains_and_saved_presets_without_stem_stay_patchify(tok, lm_state) -> None:
    """stem="conv": the tiny ViT's patchify layer is a conv stem (same image tokens), whose weights train under
    LoRA and whose BatchNorm statistics travel in the trained-weights view; a preset saved before the key existed
    (no "stem") rebuilds the patchify ViT it was trained with."""
    from vlblocks.encoders.conv_stem import ConvStem

    model, preset = _model(tok, lm_state, peft="lora", stem="conv")
    stem = model.image_encoder.model.patch_embed
    assert isinstance(stem, ConvStem)
    names = _grad_names(model, tok)
    first_conv = "image_encoder.model.patch_embed.proj.0."
    assert any(n.startswith(first_conv) for n in names)  # the conv stem trains
    assert any("patch_embed.proj.1.running_mean" in k for k in TrainedView(model).state_dict())
    patch, _ = _model(tok, lm_state, peft="lora")
    assert not isinstance(patch.image_encoder.model.patch_embed, ConvStem)  # control: the default is patchify
    assert model.encode(_batch(tok)[0]).shape == patch.encode(_batch(tok)[0]).shape  # the same image tokens
    saved = {k: v for k, v in preset.to_dict().items() if k != "stem"}
    assert CaptionPreset.from_dict(saved).stem == "patch"
