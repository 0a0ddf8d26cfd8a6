"""ImageEncoder: one interface over timm models, HF vision models and the native tiny CNN.

Whatever it wraps, the encoder maps pixel values to an `EncoderOutput` whose first token is a summary: the
model's [CLS] token for ViT-style models (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; DINOv2,
Oquab et al. 2023; CLIP, Radford et al. 2021), or a mean-pooled token prepended to the flattened feature map for
CNNs and for token models without a [CLS]. `ImageConfig` carries the preprocessing the weights expect (side,
mean, std), read from the HF image processor or timm's data config. Parameters the output never depends on
(an HF pooler, DINOv2's mask token, CLIP's post-layernorm) stay frozen, so DDP and gradient checks see no
unused trainable parameter.

Shapes: B batch, C channels (3), H x W image, N tokens (prefix tokens first), D width.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn

from vlblocks._checks import check_choice, check_finite_number, check_positive_int, check_tensor
from vlblocks.encoders.convnet import ConvNet
from vlblocks.encoders.freezing import FreezableEncoder
from vlblocks.encoders.loading import accepts, hf_unused_parameters, is_hf_model, load_hf_tower, resolve_local
from vlblocks.encoders.output import EncoderOutput

__all__ = ["CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ImageConfig", "ImageEncoder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)
# mean / std by HF model_type when a checkpoint has no image processor (else ImageNet)
_HF_STATS = {"clip": (CLIP_MEAN, CLIP_STD), "clip_vision_model": (CLIP_MEAN, CLIP_STD), "vit": (_HALF, _HALF)}
_HF_STATS |= {"siglip": (_HALF, _HALF), "siglip_vision_model": (_HALF, _HALF)}
# HF submodules the last hidden state never depends on, by model_type (poolers and mask tokens: all types)
_HF_UNUSED = {"clip_vision_model": ("post_layernorm",), "siglip_vision_model": ("head",)}
_TINY_KINDS = ("cnn", "vit", "dinov2", "hf-vit", "clip")


@dataclass(frozen=True)
class ImageConfig:
    """The preprocessing an image encoder expects: square side in pixels and per-channel mean / std.

    `normalize(x)` maps (B, 3, H, W) floats in [0, 1] to the normalised pixel values the encoder takes.
    """

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_positive_int("size", self.size)
        for name in ("mean", "std"):
            raw = getattr(self, name)
            if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
                raise TypeError(f"{name} must be a sequence of 3 numbers, got {type(raw).__name__}")
            value = tuple(check_finite_number(f"{name}[{i}]", v) for i, v in enumerate(raw))
            if len(value) != 3:
                raise ValueError(
                    f"{name} must have 3 values (one per RGB channel), got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) normalised with mean / std."""
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class ImageEncoder(FreezableEncoder):
    """Wrap a timm model (or any module with timm's interface, such as `ConvNet`) or an HF vision model.

    Args:
        model: a timm-style model (`forward_features` -> (B, N, D) tokens or a (B, D, h, w) map, `num_features`,
            optionally `num_prefix_tokens`, `has_class_token`, `pretrained_cfg`), such as a timm model or the
            native `ConvNet`, or an HF vision `PreTrainedModel` (`last_hidden_state`, [CLS] first).
        image_config: the preprocessing; default from the model (timm data config, HF config, ImageNet stats).

    Attributes:
        dim: token width D. num_prefix_tokens: [CLS] + register (+ prepended mean) tokens before the patches.
        image_config: `ImageConfig`. model: the wrapped module. source: "hf", "timm" (a timm class) or "native"
        (another module with timm's interface, e.g. `ConvNet`).
    """

    def __init__(self, model: nn.Module, *, image_config: ImageConfig | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if image_config is not None and not isinstance(image_config, ImageConfig):
            raise TypeError(f"image_config must be an ImageConfig or None, got {type(image_config).__name__}")
        self.model = model
        self._frozen = False
        self._unused: frozenset[str] = frozenset()  # parameters the output never uses: always frozen
        self._interpolate = self._nhwc = False
        if is_hf_model(model):
            default = self._init_hf(model)
        elif callable(getattr(model, "forward_features", None)) and hasattr(model, "num_features"):
            default = self._init_timm(model)
        else:
            raise TypeError(
                "model must be a timm model (or a module with forward_features and num_features, like ConvNet) "
                f"or a transformers PreTrainedModel, got {type(model).__name__}"
            )
        self.image_config = image_config or default
        self.num_prefix_tokens = self._model_prefix + int(self._prepend_mean)
        self._freeze_unused()

    def _init_hf(self, model: nn.Module) -> ImageConfig:
        config = model.config
        if not accepts(model.forward, "pixel_values"):
            raise TypeError(
                f"model must be an HF vision model taking pixel_values, got {type(model).__name__}"
            )
        self.source, self.dim = "hf", int(config.hidden_size)
        self.in_chans = int(getattr(config, "num_channels", 3))
        names = [name for name, _ in model.named_parameters()]
        has_cls = any(n.endswith(("cls_token", "class_embedding")) for n in names)
        self._model_prefix = int(has_cls) + int(getattr(config, "num_register_tokens", 0) or 0)
        self._prepend_mean = not has_cls
        self._unused = hf_unused_parameters(model, _HF_UNUSED.get(config.model_type, ()))
        self._interpolate = accepts(model.forward, "interpolate_pos_encoding")
        size = getattr(config, "image_size", None)
        self._hf_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return _hf_default_config(config)

    def _init_timm(self, model: nn.Module) -> ImageConfig:
        self.source = "timm" if type(model).__module__.startswith("timm.") else "native"
        self.dim = int(model.num_features)
        self.in_chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
        self._model_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self._prepend_mean = not getattr(model, "has_class_token", self._model_prefix > 0)
        self._nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
        return _timm_image_config(model)

    @property
    def out_dim(self) -> int:
        """Token width D (= `dim`)."""
        return self.dim

    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        """(B, C, H, W) normalised pixels -> EncoderOutput(tokens (B, N, D), mask None, cls (B, D))."""
        _check_pixels(pixel_values, self.in_chans)
        dtype = next(self.model.parameters()).dtype
        if pixel_values.dtype != dtype and dtype.is_floating_point:
            pixel_values = pixel_values.to(dtype)
        if self.source == "hf":
            kwargs = {}
            if self._interpolate and tuple(pixel_values.shape[-2:]) != self._hf_size:
                kwargs["interpolate_pos_encoding"] = True
            tokens = self.model(pixel_values=pixel_values, **kwargs).last_hidden_state  # (B, N, D)
        else:
            feats = self.model.forward_features(pixel_values)
            if feats.ndim == 4:
                pattern = "b h w d -> b (h w) d" if self._nhwc else "b d h w -> b (h w) d"
                feats = rearrange(feats, pattern)  # (B, h*w, D)
            tokens = feats
        if self._prepend_mean:
            summary = tokens[:, self._model_prefix :].mean(dim=1, keepdim=True)  # (B, 1, D)
            tokens = torch.cat([summary, tokens], dim=1)  # (B, 1 + N, D)
        return EncoderOutput(tokens=tokens, mask=None, cls=tokens[:, 0])

    def extra_repr(self) -> str:
        cfg = self.image_config
        return f"source={self.source}, dim={self.dim}, num_prefix_tokens={self.num_prefix_tokens}, size={cfg.size}"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        pretrained: bool = True,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> ImageEncoder:
        """Load an image encoder by name: a local HF / timm folder, a timm name, or an HF hub id.

        Args:
            name_or_path: a folder with config.json (HF: AutoModel rules, the vision tower of CLIP / SigLIP;
                timm: a config.json with "architecture"), "timm/<name>" or a timm registry name, or an HF hub
                id such as "facebook/dinov2-small" or "openai/clip-vit-base-patch32".
            pretrained: load the weights (False: the same architecture, random init).
            image_size: input side to use instead of the checkpoint's (timm ViTs resize their position
                embedding; HF models interpolate it at run time).
            **kwargs: passed to `timm.create_model` or the HF `from_pretrained` (e.g. attn_implementation).

        Raises:
            FileNotFoundError: a path that does not exist or has no config.json.
            ValueError: trust_remote_code asked for, or a checkpoint missing weights of the tower.
        """
        if image_size is not None:
            check_positive_int("image_size", image_size)
        name, folder = resolve_local(name_or_path, kwargs)
        timm_name = _timm_name(name, folder)
        if timm_name is not None:
            model = _create_timm(timm_name, pretrained=pretrained, image_size=image_size, **kwargs)
            encoder = cls(model)
        else:
            model = load_hf_tower(name, "vision", pretrained=pretrained, **kwargs)
            encoder = cls(model, image_config=_hf_image_config(name, model.config))
        if image_size is not None:
            encoder.image_config = ImageConfig(
                image_size, encoder.image_config.mean, encoder.image_config.std
            )
        return encoder

    @classmethod
    def tiny(
        cls,
        kind: str = "cnn",
        *,
        image_size: int = 64,
        dim: int = 64,
        depth: int = 2,
        heads: int = 2,
        patch_size: int = 8,
    ) -> ImageEncoder:
        """A small random-init encoder for offline recipes and tests; tokens cover image_size / patch_size cells.

        kind: "cnn" (native `ConvNet` with log2(patch_size) stride-2 stages; `depth` and `heads` unused),
        "vit" (timm VisionTransformer), "dinov2" (HF Dinov2Model), "hf-vit" (HF ViTModel) or "clip"
        (HF CLIPVisionModel). The image statistics are those of the real model family.
        """
        check_choice("kind", kind, _TINY_KINDS)
        for name, value in (("image_size", image_size), ("dim", dim), ("depth", depth), ("heads", heads)):
            check_positive_int(name, value)
        check_positive_int("patch_size", patch_size)
        if image_size % patch_size:
            raise ValueError(f"image_size must be divisible by patch_size={patch_size}, got {image_size}")
        if kind == "cnn":
            stages = patch_size.bit_length() - 1
            if patch_size != 2**stages or stages == 0:
                raise ValueError(f"patch_size must be a power of 2 >= 2 for kind='cnn', got {patch_size}")
            return cls(ConvNet(dim=dim, stages=stages, image_size=image_size))
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads={heads}, got {dim}")
        model, image_config = _tiny_transformer(kind, image_size, dim, depth, heads, patch_size)
        return cls(model, image_config=image_config)


def _tiny_transformer(kind: str, size: int, dim: int, depth: int, heads: int, patch: int) -> tuple:
    """(model, image_config) of a tiny random-init ViT-style model."""
    if kind == "vit":
        from timm.models.vision_transformer import VisionTransformer

        model = VisionTransformer(
            img_size=size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0
        )
        return model, ImageConfig(size, IMAGENET_MEAN, IMAGENET_STD)
    import transformers as tf

    common = dict(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, image_size=size)
    common["patch_size"] = patch
    if kind == "dinov2":
        return tf.Dinov2Model(tf.Dinov2Config(mlp_ratio=4, **common)), ImageConfig(
            size, IMAGENET_MEAN, IMAGENET_STD
        )
    if kind == "hf-vit":
        model = tf.ViTModel(tf.ViTConfig(intermediate_size=4 * dim, **common), add_pooling_layer=False)
        return model, ImageConfig(size, _HALF, _HALF)
    model = tf.CLIPVisionModel(tf.CLIPVisionConfig(intermediate_size=4 * dim, projection_dim=dim, **common))
    return model, ImageConfig(size, CLIP_MEAN, CLIP_STD)


def _check_pixels(pixel_values: object, in_chans: int) -> None:
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim == 4:
        check_tensor("pixel_values", pixel_values)  # an empty batch (B = 0) is named
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must have rank 4 (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    if pixel_values.shape[1] != in_chans:
        raise ValueError(
            f"pixel_values must have {in_chans} channels (B, {in_chans}, H, W), got shape {tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a float tensor (normalised pixels), got dtype {pixel_values.dtype}"
        )


# ----------------------------------------------------------------------------- timm


def _timm_name(name: str, folder: Path | None) -> str | None:
    """The timm model name for `name`, or None when it is an HF checkpoint / hub id."""
    if folder is not None:
        config = json.loads((folder / "config.json").read_text())
        is_timm = "architecture" in config and "model_type" not in config
        return f"local-dir:{folder}" if is_timm else None
    if name.startswith("timm/"):
        return f"hf-hub:{name}"
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    import timm

    return name if timm.is_model(name) else None


def _create_timm(name: str, *, pretrained: bool, image_size: int | None, **kwargs: Any) -> nn.Module:
    import timm

    kwargs = {"pretrained": pretrained, "num_classes": 0, **kwargs}
    if image_size is None:
        return timm.create_model(name, **kwargs)
    try:
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError as err:  # CNNs take no img_size: they run at any size
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)


def _timm_image_config(model: nn.Module) -> ImageConfig:
    cfg = getattr(model, "pretrained_cfg", None)
    if not type(model).__module__.startswith("timm.") and isinstance(cfg, dict):
        # a native module with timm's interface (ConvNet): read its data config without importing timm
        return ImageConfig(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]))
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    size = int(data["input_size"][-1])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:  # the size the model was built for (timm's data config keeps the pretrained one)
        size = int(img_size[-1] if isinstance(img_size, (tuple, list)) else img_size)
    return ImageConfig(size, tuple(data["mean"]), tuple(data["std"]))


# ----------------------------------------------------------------------------- HF


def _hf_default_config(config: Any) -> ImageConfig:
    size = getattr(config, "image_size", 224)
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    mean, std = _HF_STATS.get(getattr(config, "model_type", ""), (IMAGENET_MEAN, IMAGENET_STD))
    return ImageConfig(size, mean, std)


def _hf_image_config(name: str, config: Any) -> ImageConfig:
    """ImageConfig from the checkpoint's image processor, else from its config and family defaults."""
    from transformers import AutoImageProcessor

    default = _hf_default_config(config)
    try:
        processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
    except Exception as err:  # no processor in the checkpoint (or it cannot be built here): use defaults
        warnings.warn(
            f"no image processor for {name!r} ({type(err).__name__}); using {default}", stacklevel=3
        )
        return default
    keys = ("crop_size", "size") if getattr(processor, "do_center_crop", False) else ("size",)
    sizes = [_side(getattr(processor, key, None)) for key in keys]
    size = next((s for s in sizes if s), default.size)
    mean = _triple(getattr(processor, "image_mean", None)) or default.mean
    std = _triple(getattr(processor, "image_std", None)) or default.std
    return ImageConfig(size, mean, std)


def _side(size: Any) -> int | None:
    """The square side from an HF processor size: an int, or a dict / SizeDict with height or shortest_edge."""
    if isinstance(size, int):
        return size
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)
