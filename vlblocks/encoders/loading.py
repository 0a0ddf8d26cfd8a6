"""Helpers shared by the image and text encoder wrappers: HF model detection and loading.

Loading never runs code from a checkpoint (`trust_remote_code` is refused) and resolves local folders before
hub ids, so tests load tiny models saved with `save_pretrained` from a temporary folder.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "accepts",
    "hf_unused_parameters",
    "is_hf_model",
    "load_hf_tower",
    "resolve_local",
]


def is_hf_model(model: object) -> bool:
    """True for a transformers PreTrainedModel, without importing transformers when nobody did."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def accepts(fn: Any, param: str) -> bool:
    """True when callable `fn` has a parameter named `param`."""
    try:
        return param in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def hf_unused_parameters(model: nn.Module, modules: tuple[str, ...] = ()) -> frozenset[str]:
    """Wrapper-level names ("model.<name>") of the parameters of an HF model that its last hidden state never
    uses: poolers, mask tokens (masked modelling only) and the submodules named in `modules`."""
    unused = set()
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if "pooler" in parts or parts[-1] == "mask_token" or any(m in parts for m in modules):
            unused.add(f"model.{name}")
    return frozenset(unused)


def resolve_local(name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> tuple[str, Path | None]:
    """Check a model name and the loader kwargs; return (name, local folder or None for a hub / registry name).

    Raises:
        TypeError: name_or_path is not a str or path. ValueError: trust_remote_code=True.
        FileNotFoundError: a path-like name that does not exist, or a folder without config.json.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or os.PathLike, got {type(name_or_path).__name__}")
    if kwargs.pop("trust_remote_code", False):
        raise ValueError(
            "trust_remote_code=True is not supported: vlblocks never runs code from a checkpoint"
        )
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"name_or_path folder {str(path)!r} has no config.json")
        return str(path), path
    looks_local = isinstance(name_or_path, os.PathLike) or name.startswith(("/", ".", "~")) or path.exists()
    if looks_local or os.path.isabs(name):
        raise FileNotFoundError(f"name_or_path {name!r} is not an existing folder with a config.json")
    return name, None


def load_hf_tower(name: str, part: str, *, pretrained: bool, **kwargs: Any) -> nn.Module:
    """The `part` ("vision" / "text") tower of an HF checkpoint, built without pooler when its class allows.

    A plain checkpoint loads its own class (AutoModel rules); a composite one (CLIPConfig, SiglipConfig ...)
    loads the tower class (CLIPVisionModel, CLIPTextModel ...) from the same weights. Never remote code; a
    checkpoint that does not hold every weight of the tower raises ValueError instead of returning random weights.
    """
    from transformers import MODEL_MAPPING, AutoConfig

    config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    sub = getattr(config, f"{part}_config", None)
    tower_config = config if sub is None else sub
    if type(tower_config) not in MODEL_MAPPING:
        raise ValueError(
            f"no transformers model class for {type(tower_config).__name__} ({name!r}, {part} tower)"
        )
    model_cls = MODEL_MAPPING[type(tower_config)]
    init_kwargs = {"add_pooling_layer": False} if accepts(model_cls.__init__, "add_pooling_layer") else {}
    if not pretrained:
        return model_cls(tower_config, **init_kwargs)
    model, info = model_cls.from_pretrained(
        name, config=tower_config, output_loading_info=True, trust_remote_code=False, **init_kwargs, **kwargs
    )
    missing = [key for key in info.get("missing_keys", ()) if not key.startswith("pooler.")]
    if missing:
        raise ValueError(
            f"checkpoint {name!r} does not hold the weights of {model_cls.__name__}: "
            f"{len(missing)} missing keys, e.g. {sorted(missing)[:3]}"
        )
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        model = model.float()  # half-precision checkpoints train in float32 unless a dtype is asked for
    return model
