"""SegmentationModel: a (frozen) image encoder's patch tokens -> a segmentation head -> per-pixel class logits.

The set-up of Segmenter (Strudel et al. 2021) and of DINOv2's frozen-feature segmentation probes (Oquab et al.
2023): the encoder's prefix tokens ([CLS], registers, or the mean token vlblocks prepends) are dropped, the patch
tokens are laid back on their h x w grid, and a head (`LinearSegHead`, `ConvSegHead`, `MaskTransformerSegHead`)
predicts logits that are upsampled to the image size. With `num_layers=k` the head sees the last k transformer
layers' patch tokens concatenated along the width (each through the encoder's final norm, as DINOv2's
`get_intermediate_layers(norm=True)`). The model owns no weights of its own.

Shapes: B batch, H x W image, h x w patch grid, N = h * w patch tokens, D encoder width, k layers, C classes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from vlblocks._checks import check_positive_int, check_tensor
from vlblocks.encoders.output import EncoderOutput
from vlblocks.heads.segmentation import join_tokens

__all__ = ["PatchFeatures", "SegmentationModel", "last_layer_tokens", "patch_grid"]


class PatchFeatures(NamedTuple):
    """Patch tokens (B, N, k * D), prefix tokens removed, and their grid (h, w) with h * w = N."""

    tokens: torch.Tensor
    grid: tuple[int, int]


def patch_grid(num_tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """The grid (h, w), h * w = `num_tokens`, whose aspect ratio is closest to that of the image `size` (H, W).

    Patch embeddings and strided CNNs keep the aspect ratio up to rounding (a 224 x 448 image with 14-pixel
    patches gives 16 x 32), so h is near sqrt(N * H / W).

    Raises:
        ValueError: when no factorisation of N is within one row of that estimate.
    """
    n = check_positive_int("num_tokens", num_tokens)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"size must be a pair of positive ints (height, width), got {size!r}")
    height, width = check_positive_int("size[0]", size[0]), check_positive_int("size[1]", size[1])
    guess = math.sqrt(n * height / width)
    candidates = [h for h in range(max(1, math.floor(guess) - 1), math.ceil(guess) + 2) if n % h == 0]
    if not candidates:
        raise ValueError(
            f"num_tokens must factor into a patch grid with the aspect ratio of the image {tuple(size)}, "
            f"got {n} tokens"
        )
    h = min(candidates, key=lambda c: abs(math.log(c * c / n) - math.log(height / width)))
    return h, n // h


# where the transformer blocks sit: timm ViT; HF ViT / DINOv2 (transformers 4 and 5); HF CLIP / SigLIP towers
_BLOCK_PATHS = ("blocks", "encoder.layer", "layers", "encoder.layers", "vision_model.encoder.layers")
# the final norm applied to the last block's tokens (CLIP's post_layernorm is only used on the pooled token)
_NORM_PATHS = ("norm", "layernorm", "vision_model.post_layernorm", "post_layernorm")


def _blocks_and_norm(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The transformer blocks of a timm ViT / HF ViT, DINOv2, CLIP or SigLIP vision model, and its final norm."""
    blocks = _first_submodule(model, _BLOCK_PATHS)
    if not isinstance(blocks, nn.ModuleList | nn.Sequential) or len(blocks) == 0:
        raise ValueError(
            "num_layers > 1 needs a timm ViT or an HF ViT / DINOv2 / CLIP / SigLIP vision model, "
            f"got {type(model).__name__}"
        )
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    norm = _first_submodule(model, _NORM_PATHS if "siglip" in model_type else _NORM_PATHS[:2])
    return list(blocks), norm if norm is not None else nn.Identity()


def _first_submodule(model: nn.Module, paths: tuple[str, ...]) -> nn.Module | None:
    """The submodule at the first of `paths` that exists in `model`, or None."""
    for path in paths:
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    return None


def last_layer_tokens(encoder: nn.Module, pixel_values: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    """Patch tokens of the last `num_layers` transformer layers of an `ImageEncoder`, oldest first.

    Each layer's output passes through the encoder's final norm (the last one then equals the encoder's own
    patch tokens); prefix tokens are removed.

    Args:
        encoder: an `ImageEncoder` over a timm ViT or an HF ViT / DINOv2 / CLIP / SigLIP vision model.
        pixel_values: (B, 3, H, W) normalised pixels.
        num_layers: k, at most the model's number of layers.

    Returns:
        k tensors (B, N, D).
    """
    k = check_positive_int("num_layers", num_layers)
    blocks, norm = _blocks_and_norm(getattr(encoder, "model", encoder))
    if k > len(blocks):
        raise ValueError(f"num_layers must be at most the encoder's {len(blocks)} layers, got {k}")
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, args: object, out: object) -> None:
        outputs.append(out[0] if isinstance(out, (tuple, list)) else out)  # HF layers may return tuples

    handles = [block.register_forward_hook(keep) for block in blocks[-k:]]
    try:
        final = encoder(pixel_values)
    finally:
        for handle in handles:
            handle.remove()
    n = final.tokens.shape[1] - encoder.num_prefix_tokens  # patch tokens come last in every layer
    return [norm(out)[:, -n:] for out in outputs]  # k x (B, N, D)


class SegmentationModel(nn.Module):
    """Image -> encoder patch tokens -> head -> logits (B, C, H, W).

    Args:
        backbone: an `ImageEncoder` (any module returning an `EncoderOutput` with a `num_prefix_tokens`
            attribute works when `num_layers` is 1).
        head: `(tokens (B, N, k * D), grid=(h, w), size=(H, W)) -> (B, C, H, W)`, e.g. `LinearSegHead(k * D, C)`.
        freeze_backbone: freeze the backbone (no gradients, kept in eval mode, run under `torch.no_grad`).
        num_layers: k, how many of the last transformer layers' tokens the head sees (concatenated).
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, *, freeze_backbone: bool = True, num_layers: int = 1
    ) -> None:
        super().__init__()
        for name, module in (("backbone", backbone), ("head", head)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        prefix = getattr(backbone, "num_prefix_tokens", None)
        if not isinstance(prefix, int) or isinstance(prefix, bool) or prefix < 0:
            raise TypeError(
                f"backbone must have an int num_prefix_tokens (e.g. an ImageEncoder), got {type(backbone).__name__}"
            )
        if not isinstance(freeze_backbone, bool):
            raise TypeError(f"freeze_backbone must be a bool, got {type(freeze_backbone).__name__}")
        self.num_layers = check_positive_int("num_layers", num_layers)
        if num_layers > 1:
            _blocks_and_norm(getattr(backbone, "model", backbone))  # fails now rather than at the first batch
        width, head_dim = getattr(backbone, "dim", None), getattr(head, "dim", None)
        if isinstance(width, int) and isinstance(head_dim, int) and head_dim != width * num_layers:
            raise ValueError(
                f"head.dim must equal num_layers * backbone.dim = {num_layers} * {width}, got {head_dim}"
            )
        self.backbone, self.head = backbone, head
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            if callable(getattr(backbone, "freeze", None)):
                backbone.freeze()
            else:
                backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # a frozen backbone keeps its norm statistics and has no dropout
        return self

    def features(self, pixel_values: torch.Tensor) -> PatchFeatures:
        """Patch tokens (B, N, k * D) of `pixel_values` (B, 3, H, W) and their grid; no gradient when frozen.

        A recipe that trains several heads on one frozen backbone can compute these once per image.
        """
        check_tensor("pixel_values", pixel_values, ndim=4, dtype="float", shape="(B, 3, H, W)")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            if self.num_layers == 1:
                out = self.backbone(pixel_values)
                if not isinstance(out, EncoderOutput):
                    raise TypeError(f"backbone must return an EncoderOutput, got {type(out).__name__}")
                tokens = out.tokens[:, self.backbone.num_prefix_tokens :]  # (B, N, D)
            else:
                tokens = join_tokens(last_layer_tokens(self.backbone, pixel_values, self.num_layers))
        grid = patch_grid(tokens.shape[1], tuple(pixel_values.shape[-2:]))
        return PatchFeatures(tokens, grid)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> logits (B, C, H, W)."""
        tokens, grid = self.features(pixel_values)
        return self.head(tokens, grid=grid, size=tuple(pixel_values.shape[-2:]))

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class index per pixel (B, H, W), computed in eval mode without gradients (the mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            return self(pixel_values).argmax(dim=1)
        finally:
            self.train(was_training)
