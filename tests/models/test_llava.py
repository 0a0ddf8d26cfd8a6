"""vlblocks.models.llava: the tiny offline LLaVA, its save / load round trip, left-padded batching, the prompt,
the generation arguments and the offline check."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlblocks.models.llava import (
    LlavaUnavailableError,
    build_tiny_llava,
    caption_prompt,
    generate_captions,
    generation_kwargs,
    load_llava,
    resolve_llava,
)

TEXTS = [
    "a small red circle at the top left",
    "describe the image",
    "write a long and detailed caption please",
]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_llava(TEXTS, seed=0)


def images(n: int) -> list[Image.Image]:
    return [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
        for i in range(n)
    ]


def test_prompt_follows_llava_1_5_and_expands_the_image_token(tiny) -> None:
    model, processor = tiny
    prompt = caption_prompt(processor, "describe the image")
    assert prompt == "USER: <image>\ndescribe the image ASSISTANT:"
    ids = processor(images=images(1), text=[prompt], return_tensors="pt")["input_ids"][0]
    # one placeholder per patch (32 / 8)^2, the class token dropped by the "default" strategy
    assert int((ids == processor.image_token_id).sum()) == 16 == model.config.image_seq_length
    assert ids[0] == processor.tokenizer.bos_token_id


def test_left_padded_batch_equals_one_by_one_and_right_padding_would_not(tiny) -> None:
    model, processor = tiny
    prompts = [caption_prompt(processor, t) for t in TEXTS[1:]]  # different lengths: the first row is padded
    imgs = images(2)

    def greedy(batch_imgs, batch_prompts, side):
        processor.tokenizer.padding_side = side
        inputs = processor(images=batch_imgs, text=batch_prompts, padding=True, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        return out[:, inputs["input_ids"].shape[1] :].tolist()  # (b, 6)

    alone = [greedy([imgs[k]], [prompts[k]], "left")[0] for k in range(2)]
    assert greedy(imgs, prompts, "left") == alone
    assert greedy(imgs, prompts, "right")[0] != alone[0]  # control: the padded row changes with right padding
    processor.tokenizer.padding_side = "left"


def test_generate_captions_batches_agree_and_images_matter(tiny) -> None:
    model, processor = tiny
    gen = generation_kwargs(max_new_tokens=5)
    imgs = images(3)
    batched = generate_captions(model, processor, imgs, "describe the image", batch_size=2, generation=gen)
    single = [
        generate_captions(model, processor, [im], "describe the image", generation=gen)[0] for im in imgs
    ]
    assert batched == single and all(isinstance(c, str) and c for c in batched)
    other = generate_captions(
        model, processor, imgs, "write a long and detailed caption please", generation=gen
    )
    assert other != batched  # the instruction reaches the model


def test_saved_folder_loads_back_with_the_same_captions(tiny, tmp_path) -> None:
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_llava(str(tmp_path))
    assert loaded_processor.tokenizer.padding_side == "left"
    gen = generation_kwargs(max_new_tokens=5)
    a = generate_captions(model, processor, images(2), "describe the image", generation=gen)
    b = generate_captions(loaded, loaded_processor, images(2), "describe the image", generation=gen)
    assert a == b


def test_generation_kwargs_pass_sampling_knobs_only_when_sampling() -> None:
    assert generation_kwargs(temperature=0.5) == {"max_new_tokens": 30, "num_beams": 1, "do_sample": False}
    out = generation_kwargs(do_sample=True, temperature=0.5, top_p=0.9, num_beams=2)
    assert out == {"max_new_tokens": 30, "num_beams": 2, "do_sample": True, "temperature": 0.5, "top_p": 0.9}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive int, got 0"),
        ({"num_beams": 0}, "num_beams must be a positive int"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be a finite positive number, got 0.0"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"do_sample": True, "top_p": 0.0}, r"top_p must be in \(0, 1\], got 0"),
    ],
)
def test_bad_generation_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        generation_kwargs(**kwargs)


def test_bad_inputs(tiny, tmp_path) -> None:
    model, processor = tiny
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        caption_prompt(processor, "  ")
    with pytest.raises(ValueError, match="images is empty"):
        generate_captions(model, processor, [], "describe the image")
    with pytest.raises(ValueError, match="image_size must be a multiple of patch_size=8, got 30"):
        build_tiny_llava(TEXTS, image_size=30)
    with pytest.raises(LlavaUnavailableError, match="without config.json"):
        resolve_llava(str(tmp_path))


def test_offline_hub_name_fails_fast_naming_the_model_and_the_flag(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LlavaUnavailableError) as err:
        resolve_llava("nobody/not-a-cached-llava")
    message = str(err.value)
    assert "nobody/not-a-cached-llava" in message and "--model" in message and "tiny-random" in message
    assert "HF_HUB_OFFLINE is set" in message
