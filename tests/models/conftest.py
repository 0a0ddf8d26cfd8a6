"""Fixtures of the model tests: a tiny random HF CLIPModel saved with save_pretrained (model, tokenizer, processor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CLIP_WORDS = [
    "a photo of a red circle",
    "a blue square",
    "this is not a photo of a green triangle",
    "no , no score .",
]


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny random CLIPModel (eos = the word tokenizer's [SEP]), its tokenizer and processor."""
    import transformers as tf

    from vlblocks.data.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(CLIP_WORDS)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    text |= dict(num_attention_heads=2, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id)
    text |= dict(eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision |= dict(image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():  # move LayerNorms and the scale off their init so every parameter matters
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder
