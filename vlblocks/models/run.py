"""Rebuild a trained model from a recipe's run folder, for use in your own code.

A run folder holds ``run_config.json`` (the task and the preset that built the model), ``checkpoint/`` (safetensors +
JSON) and the task's vocabularies (``vocab.json``, ``tokenizer/``). ``load_run(folder)`` rebuilds the architecture
with the same preset builder the recipe used, adds LoRA when the checkpoint has LoRA weights, and loads the
trained weights: no flag of the training command has to be repeated.

    run = load_run("runs/vqa")
    logits = run.model(pixel_values, input_ids, attention_mask)      # run.vocab.decode(logits.argmax(-1))
    run = load_run("runs/retrieval")   # a DualEncoder: run.model.encode_image / encode_text, run.tokenizer
    run = load_run("runs/caption")     # a Captioner with its PEFT layers: run.model.generate(pixel_values)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["LoadedRun", "load_run"]


@dataclass
class LoadedRun:
    """A trained model with what it needs around it: ``extras`` holds e.g. ``vocab`` and ``tokenizer``."""

    task: str
    model: nn.Module
    config: dict[str, Any]
    folder: Path
    extras: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # run.vocab, run.tokenizer
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def load_run(folder: str | os.PathLike, *, map_location: str = "cpu") -> LoadedRun:
    """The trained model of a run folder, in eval mode.

    Raises:
        FileNotFoundError: no ``run_config.json`` or no complete checkpoint in `folder`.
        ValueError: the run's task has no loader here.
    """
    from vlblocks.training.run import load_run_config

    folder = Path(folder)
    config = load_run_config(folder)
    loaders = {"vqa": _load_vqa, "retrieval": _load_retrieval, "caption": _load_caption}
    if config["task"] not in loaders:
        raise ValueError(f"task of {folder} must be one of {sorted(loaders)}, got {config['task']!r}")
    run = loaders[config["task"]](folder, config, map_location)
    run.model.eval()
    return run


def _checkpoint_keys(ckpt: Path) -> set[str]:
    from safetensors import safe_open

    from vlblocks.training.checkpoint import read_checkpoint_state

    read_checkpoint_state(ckpt)  # raises FileNotFoundError naming the folder when incomplete
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def _load_vqa(folder: Path, config: dict[str, Any], map_location: str) -> LoadedRun:
    from vlblocks.data import AnswerVocab
    from vlblocks.models.presets import VQAPreset, apply_vqa_lora, build_vqa_model
    from vlblocks.training.checkpoint import load_checkpoint

    preset = VQAPreset.from_dict(config["model"])
    vocab = AnswerVocab.load(folder / "vocab.json")
    tokenizer = None
    if (folder / "tokenizer").is_dir():
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer"))
    model = build_vqa_model(preset, num_answers=len(vocab), tokenizer=tokenizer)
    ckpt = folder / "checkpoint"
    if preset.lora_r and any("lora_A" in k for k in _checkpoint_keys(ckpt)):
        apply_vqa_lora(model, preset)
    load_checkpoint(ckpt, model=model, map_location=map_location, restore_rng=False)
    extras = {
        "vocab": vocab,
        "tokenizer": model.text_encoder.tokenizer,
        "image_config": model.image_encoder.image_config,
    }
    return LoadedRun("vqa", model, config, folder, extras)


def _load_retrieval(folder: Path, config: dict[str, Any], map_location: str) -> LoadedRun:
    from vlblocks.models.retrieval_preset import RetrievalPreset, build_dual_encoder
    from vlblocks.training.checkpoint import load_checkpoint

    preset = RetrievalPreset.from_dict(config["model"])
    tokenizer = None
    if (folder / "tokenizer").is_dir() and not preset.clip:
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer"))
    model = build_dual_encoder(preset, tokenizer=tokenizer)
    load_checkpoint(folder / "checkpoint", model=model, map_location=map_location, restore_rng=False)
    image_config = model.image_encoder.image_config
    extras = {"tokenizer": model.tokenizer, "image_config": image_config, "preset": preset}
    return LoadedRun("retrieval", model, config, folder, extras)


def _load_caption(folder: Path, config: dict[str, Any], map_location: str) -> LoadedRun:
    """Caption runs: the base language model (the run's cached tiny LM, or the hub / folder GPT-2), the PEFT
    layers, the trained non-PEFT weights (``checkpoint/``) and the adapter file (``adapter/``)."""
    from transformers import AutoTokenizer

    from vlblocks.models.caption_preset import CaptionPreset, apply_caption_peft, build_captioner
    from vlblocks.models.trained_view import TrainedView
    from vlblocks.peft import load_adapter
    from vlblocks.training.checkpoint import load_checkpoint

    preset = CaptionPreset.from_dict(config["model"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    lm_state = None
    if preset.tiny_decoder:
        from safetensors.torch import load_file

        lm_state = load_file(str(folder / "lm" / "model.safetensors"))
    model = build_captioner(preset, tokenizer=tokenizer, lm_state=lm_state)
    apply_caption_peft(model, preset)
    load_checkpoint(folder / "checkpoint", model=TrainedView(model), map_location=map_location, restore_rng=False)
    if preset.peft != "full":
        load_adapter(model.decoder, folder / "adapter")
    extras = {"tokenizer": tokenizer, "image_config": model.image_encoder.image_config, "preset": preset}
    return LoadedRun("caption", model, config, folder, extras)
