"""Fixtures of the recipe tests: a tiny random HF CLIPModel saved with save_pretrained (model, tokenizer, processor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny random CLIPModel over ShapesWorld's words, its tokenizer and image processor."""
    import transformers as tf

    from vlblocks.data import ShapesWorld
    from vlblocks.data.tokenizer import build_word_tokenizer

    world = ShapesWorld("train", num_scenes=50, image_size=32)
    words = [c for caps in world.captions().references().values() for c in caps]
    tokenizer = build_word_tokenizer([*words, "a photo of a circle square triangle"])
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    text |= dict(num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    text |= dict(eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    vision |= dict(image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    folder = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    return folder
