"""LLaVA-1.5 zero-shot captioning through transformers: loading (hub, local folder or a tiny random model built
offline), the chat-template prompt, and batched generation with left padding.

LLaVA (Liu et al. 2023, "Visual Instruction Tuning"; LLaVA-1.5: Liu et al. 2024, "Improved Baselines with Visual
Instruction Tuning") feeds CLIP ViT-L/14-336 patch features, through a two-layer MLP projector, into a Vicuna
language model in place of the ``<image>`` tokens of a chat prompt (``USER: <image>\\n{instruction} ASSISTANT:``).
vlblocks does not re-implement it: it drives transformers' ``LlavaForConditionalGeneration`` and its processor.
``build_tiny_llava`` builds the same architecture at toy size with a word-level tokenizer and a CLIP image
processor made locally (no hub), so the whole code path runs offline; its captions are meaningless.
transformers is imported inside the functions (``import vlblocks`` does not import it).

Shape legend: B images, T prompt tokens, N new tokens, P image patches (= image tokens of the prompt).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlblocks._checks import check_positive_int, check_positive_number, check_probability

__all__ = [
    "LLAVA_MODEL",
    "TINY_RANDOM",
    "LlavaSource",
    "LlavaUnavailableError",
    "build_tiny_llava",
    "caption_prompt",
    "generate_captions",
    "generation_kwargs",
    "load_llava",
    "resolve_llava",
]

LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"  # the model of the course report
TINY_RANDOM = "tiny-random"
_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
# LLaVA-1.5's conversation format: "USER: <image>\n{text} ASSISTANT:" (images first, then the text)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class LlavaUnavailableError(RuntimeError):
    """The model is neither a local folder, nor in the local cache, nor reachable on the hub."""


@dataclass(frozen=True)
class LlavaSource:
    """Where ``load_llava`` reads a model: ``path`` (hub name or folder) and whether only local files may be used."""

    path: str
    local_only: bool


def _hub_reachable(timeout: float) -> bool:
    """Whether the hub's host accepts a TCP connection within `timeout` seconds (DNS included, in a thread)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def resolve_llava(name_or_path: str, *, timeout: float = 3.0) -> LlavaSource:
    """Where to load `name_or_path` from, decided in at most `timeout` seconds, without downloading.

    A local folder is used as is; a hub name is loaded from the local cache when its ``config.json`` is there,
    and from the hub only when ``HF_HUB_OFFLINE`` is unset and the hub answers within `timeout`.

    Raises:
        LlavaUnavailableError: none of these, with a message naming the model, ``--model PATH`` and tiny-random.
    """
    check_positive_number("timeout", timeout)
    if Path(name_or_path).is_dir():
        if not (Path(name_or_path) / "config.json").is_file():
            raise LlavaUnavailableError(f"{name_or_path} is a folder without config.json: not a saved model")
        return LlavaSource(str(name_or_path), True)
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached, str):
        return LlavaSource(name_or_path, True)
    if not constants.HF_HUB_OFFLINE and _hub_reachable(timeout):
        return LlavaSource(name_or_path, False)
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
    raise LlavaUnavailableError(
        f"{name_or_path} is not in the local Hugging Face cache and {why}. Download it where there is a network "
        f"(`hf download {name_or_path} --local-dir llava-1.5-7b-hf`) and pass the folder with "
        f"--model llava-1.5-7b-hf, or try the code path offline with --model {TINY_RANDOM}."
    )


def _tokenizer_spec(vocab: dict[str, int]) -> dict:
    """``tokenizer.json`` of a lower-casing word-level tokenizer that prepends ``<s>`` (as Llama's does)."""
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, **flags} for t in _SPECIAL],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"}],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [vocab["<s>"]], "tokens": ["<s>"]}},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def _tiny_processor(texts: Iterable[str], image_size: int, patch_size: int) -> Any:
    import re

    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    words = sorted(
        {w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())} | {"user", "assistant", ":"}
    )
    vocab = {t: i for i, t in enumerate([*_SPECIAL, *words])}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(json.dumps(_tokenizer_spec(vocab)), encoding="utf-8")
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
    tokenizer.padding_side = "left"
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_llava(
    texts: Iterable[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    dim: int = 32,
    depth: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(model, processor): a random ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama) at toy size.

    The processor's tokenizer is word-level over the words of `texts` (plus ``<unk> <s> </s> <pad> <image>``),
    pads on the left and carries LLaVA-1.5's chat template; its image processor is a CLIP one at `image_size`.
    Nothing is downloaded. ``save_pretrained`` of both gives a folder that ``load_llava`` reads back.
    """
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("dim", dim)):
        check_positive_int(name, value)
    check_positive_int("depth", depth)
    check_positive_int("heads", heads)
    if image_size % patch_size:
        raise ValueError(f"image_size must be a multiple of patch_size={patch_size}, got {image_size}")
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    processor = _tiny_processor(texts, image_size, patch_size)
    tok = processor.tokenizer
    small = dict(
        hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=depth, num_attention_heads=heads
    )
    vision = CLIPVisionConfig(**small, image_size=image_size, patch_size=patch_size, projection_dim=dim)
    text = LlamaConfig(
        **small,
        vocab_size=len(tok),
        num_key_value_heads=heads,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    # a random model may pick the placeholder token, which would ask for a second image: never generate it
    model.generation_config.suppress_tokens = [processor.image_token_id, tok.pad_token_id]
    return model, processor


def load_llava(
    name_or_path: str, *, dtype: torch.dtype | None = None, device: str = "cpu", timeout: float = 3.0
) -> tuple[Any, Any]:
    """(model, processor) of a LLaVA checkpoint (hub name or folder), in eval mode, padding on the left.

    Raises:
        LlavaUnavailableError: offline without the weights (decided within `timeout` seconds; see ``resolve_llava``).
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    source = resolve_llava(name_or_path, timeout=timeout)
    kwargs: dict[str, Any] = {"local_files_only": source.local_only}
    model = LlavaForConditionalGeneration.from_pretrained(source.path, dtype=dtype, **kwargs)
    processor = AutoProcessor.from_pretrained(source.path, **kwargs)
    processor.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
    return model.to(device).eval(), processor


def caption_prompt(processor: Any, instruction: str) -> str:
    """The chat-template prompt of one image and `instruction`, ending where the assistant's answer starts."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def generation_kwargs(
    *,
    max_new_tokens: int = 30,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> dict[str, Any]:
    """The ``generate`` arguments of a decoding configuration (sampling knobs only when sampling)."""
    out: dict[str, Any] = {
        "max_new_tokens": check_positive_int("max_new_tokens", max_new_tokens),
        "num_beams": check_positive_int("num_beams", num_beams),
        "do_sample": bool(do_sample),
    }
    if do_sample:
        out["temperature"] = check_positive_number("temperature", temperature)
        out["top_p"] = check_probability("top_p", top_p)
        if out["top_p"] == 0:
            raise ValueError("top_p must be in (0, 1], got 0")
    return out


@torch.no_grad()
def generate_captions(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    instruction: str,
    *,
    batch_size: int = 8,
    generation: dict[str, Any] | None = None,
    progress: Any = None,
) -> list[str]:
    """One caption per image for `instruction`, generated in batches of left-padded prompts.

    Args:
        images: B PIL images (or anything the processor's image processor takes).
        generation: ``generate`` arguments (``generation_kwargs``); greedy, 30 new tokens by default.
        progress: optional wrapper of the batch iterator (e.g. a tqdm factory).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if not images:
        raise ValueError("images is empty: nothing to caption")
    prompt = caption_prompt(processor, instruction)
    processor.tokenizer.padding_side = "left"
    device, dtype = model.device, model.dtype
    starts = range(0, len(images), batch_size)
    captions: list[str] = []
    for i in progress(starts) if progress else starts:
        chunk = list(images[i : i + batch_size])
        inputs = processor(images=chunk, text=[prompt] * len(chunk), padding=True, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        out = model.generate(**inputs, **(generation or generation_kwargs()))  # (b, T + N)
        new = out[:, inputs["input_ids"].shape[1] :]  # (b, N): left padding aligns every prompt's end
        captions += [c.strip() for c in processor.batch_decode(new, skip_special_tokens=True)]
    return captions
