"""Loading HF GPT-2 checkpoints (and the decoder of HF ViT-GPT-2 ones) into `GPT2Decoder`, from safetensors only.

A checkpoint is a local folder or a hub name (fetched with huggingface_hub: config.json and *.safetensors only). Keys
are HF's (`transformer.h.{i}.attn.c_attn.weight`, bare `h.{i}...` in the original `gpt2` upload, `decoder.` in front
in a `VisionEncoderDecoderModel`); HF's `Conv1D` weights (in, out) are transposed once into `nn.Linear` (out, in).
Weights a checkpoint lacks (new cross-attention, the prefix projection) keep their init: a zero cross-attention
output projection, so the loaded model computes exactly the pretrained GPT-2. Pickled `.bin` files are never read.

Shapes: D width, V vocabulary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_gpt2", "read_checkpoint", "resolve_checkpoint"]

_CONV1D = ("c_attn", "q_attn", "c_proj", "c_fc")
_SKIP_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".crossattention.bias", ".crossattention.masked_bias")


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local folder with config.json, or a hub name downloaded (config + safetensors only) to the HF cache."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or os.PathLike, got {type(name_or_path).__name__}")
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"name_or_path folder {str(path)!r} has no config.json")
        return path
    name = os.fspath(name_or_path)
    if name.startswith(("/", ".", "~")) or path.exists():
        raise FileNotFoundError(f"name_or_path {name!r} is not an existing folder with a config.json")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors"]))


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) of a folder; safetensors (single or sharded) only."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ValueError(
            f"checkpoint {str(folder)!r} has no .safetensors weights (found {pickled or 'none'}); vlblocks never "
            "unpickles weights: convert it with transformers' save_pretrained(..., safe_serialization=True)"
        )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return config, state


def load_gpt2(
    cls: type,
    name_or_path: str | os.PathLike,
    *,
    cross_attention: bool | None = None,
    mode: str = "cross",
    dim_image: int | None = None,
    **overrides: Any,
) -> Any:
    """Build `cls` (GPT2Decoder) from an HF GPT-2 or ViT-GPT-2 checkpoint.

    Args:
        name_or_path: local folder or hub name of a `GPT2LMHeadModel` / `GPT2Model` or a
            `VisionEncoderDecoderModel` whose decoder is GPT-2 (its `decoder.*` weights are read).
        cross_attention: add cross-attention blocks (default: whether the checkpoint has them). New ones start
            with a zero output projection.
        mode: "cross" or "prefix" (visual prefix; the prefix projection starts fresh).
        dim_image: width of the image tokens (default: the checkpoint's width).
        **overrides: other `GPT2DecoderConfig` fields (e.g. dropout rates).

    Raises:
        ValueError: no safetensors weights, a config that is not GPT-2, or weights that do not fit.
    """
    from vlblocks.decoders.gpt2 import GPT2DecoderConfig

    folder = resolve_checkpoint(name_or_path)
    config, state = read_checkpoint(folder)
    prefix = ""
    if config.get("model_type") == "vision-encoder-decoder":
        config, prefix = config["decoder"], "decoder."
    if config.get("model_type") != "gpt2":
        raise ValueError(f"checkpoint must be a GPT-2 (model_type 'gpt2'), got {config.get('model_type')!r}")
    state = convert_state_dict(state, prefix)
    has_cross = any(".crossattention." in k for k in state)
    if cross_attention is None:
        cross_attention = has_cross and mode == "cross"
    cfg = GPT2DecoderConfig.from_hf(
        config, cross_attention=cross_attention, mode=mode, dim_image=dim_image, **overrides
    )
    model = cls(cfg)
    if not cfg.cross_attention:
        state = {k: v for k, v in state.items() if ".crossattention." not in k and ".ln_cross_attn." not in k}
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    new = (".crossattention.", ".ln_cross_attn.", "visual_proj.", "visual_norm.")
    bad_missing = [k for k in missing if not any(part in k or k.startswith(part) for part in new)]
    if unexpected or bad_missing:
        raise ValueError(f"checkpoint does not fit GPT2Decoder: missing {bad_missing[:5]}, unexpected {unexpected[:5]}")
    if any(".crossattention." in k for k in missing):
        model.zero_init_cross_attention()
    model.reset_prefix_scale()
    return model


def convert_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """HF GPT-2 keys -> GPT2Decoder keys: strip `prefix`, add `transformer.`, transpose Conv1D weights."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith(_SKIP_SUFFIXES):
            continue
        key = key[len(prefix) :]
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key
        module = key.rsplit(".", 2)[-2]
        if module in _CONV1D and key.endswith(".weight") and value.dim() == 2:
            value = value.t().contiguous()  # Conv1D (in, out) -> Linear (out, in)
        out[key] = value
    return out
