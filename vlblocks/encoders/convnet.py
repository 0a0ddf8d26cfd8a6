"""A native tiny convolutional image encoder that learns fast from scratch on small synthetic images.

`stages` stride-2 stages, each a strided conv + BatchNorm + GELU followed by a residual conv3x3 block (ResNet,
He et al. 2016, "Deep Residual Learning"); the first stage is the stem, a 5x5 stride-2 conv on the pixels, so no
layer runs at full resolution. A 64x64 image becomes an 8x8 grid of D-wide tokens with stages=3. A learned 2-D
position embedding (initialised with the 2-D sin-cos table of MAE, He et al. 2022) is added to the grid, so
"left of" / "above" are knowable by any attention layer on top, and a final LayerNorm fixes the token scale.
It is the default image encoder of the offline recipes (ShapesWorld): cheap on CPU and quick to train. It exposes
the interface `ImageEncoder` reads from timm models (`forward_features`, `num_features`, `num_prefix_tokens`,
`has_class_token`, `pretrained_cfg`), so the encoder wraps it like any timm model.

Shapes: B batch, C channels, H x W image, h x w token grid (H / 2**stages), N = h * w tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlblocks._checks import check_choice, check_positive_int, check_tensor
from vlblocks.utils import count_parameters

__all__ = ["ConvNet", "sincos_2d"]


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """The 2-D sin-cos position table: a quarter of the channels per (axis, sin/cos), geometric frequencies.

    Returns:
        (dim, grid_h, grid_w) float32. Channels beyond the largest multiple of 4 are zero.
    """
    quarter = dim // 4
    table = torch.zeros(dim, grid_h, grid_w)
    if quarter == 0:
        return table
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (D/4,)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32), torch.arange(grid_w, dtype=torch.float32), indexing="ij"
    )
    parts = []
    for coord in (ys, xs):
        angles = omega[:, None, None] * coord[None]  # (D/4, h, w)
        parts += [angles.sin(), angles.cos()]
    table[: 4 * quarter] = torch.cat(parts, dim=0)
    return table


class _ConvNormAct(nn.Sequential):
    """conv (bias-free, same padding) -> BatchNorm2d or GroupNorm(1) -> GELU. (B, Cin, H, W) -> (B, Cout, H/s, W/s)."""

    def __init__(
        self, in_chans: int, out_chans: int, *, kernel: int = 3, stride: int = 1, norm: str = "batch"
    ) -> None:
        conv = nn.Conv2d(in_chans, out_chans, kernel, stride=stride, padding=kernel // 2, bias=False)
        norm_layer = nn.BatchNorm2d(out_chans) if norm == "batch" else nn.GroupNorm(1, out_chans)
        super().__init__(conv, norm_layer, nn.GELU())


class _Stage(nn.Module):
    """Stride-2 conv block + optional residual conv3x3 block: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, in_chans: int, out_chans: int, *, kernel: int = 3, norm: str, residual: bool) -> None:
        super().__init__()
        self.down = _ConvNormAct(in_chans, out_chans, kernel=kernel, stride=2, norm=norm)
        self.res = _ConvNormAct(out_chans, out_chans, norm=norm) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x if self.res is None else x + self.res(x)


class ConvNet(nn.Module):
    """A tiny CNN that returns a grid of position-aware tokens.

    Args:
        dim: token width D (channels of the last stage).
        stages: number of stride-2 stages, the stem included; the token grid is H / 2**stages.
        in_chans: image channels C.
        image_size: the image side the position table is sized for; other sizes interpolate it.
        norm: "batch" (BatchNorm2d, fastest to train) or "group" (GroupNorm with one group, batch-independent).
        residual: add a residual conv3x3 block after each downsampling conv.

    forward(x (B, C, H, W)) -> tokens (B, N, D) with N = (H / 2**stages) * (W / 2**stages).

    timm-style attributes: `num_features` (= D), `num_prefix_tokens` (0), `has_class_token` (False),
    `pretrained_cfg` (input size and ImageNet mean / std), and `forward_features` (= `forward`).
    """

    num_prefix_tokens = 0
    has_class_token = False

    def __init__(
        self,
        *,
        dim: int = 64,
        stages: int = 3,
        in_chans: int = 3,
        image_size: int = 64,
        norm: str = "batch",
        residual: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("stages", stages),
            ("in_chans", in_chans),
            ("image_size", image_size),
        ):
            check_positive_int(name, value)
        check_choice("norm", norm, ("batch", "group"))
        if image_size % 2**stages:
            raise ValueError(f"image_size must be divisible by 2**stages = {2**stages}, got {image_size!r}")
        self.dim, self.stages, self.in_chans, self.image_size = dim, stages, in_chans, image_size
        widths = [max(dim // 2 ** (stages - 1 - i), 8) for i in range(stages)]  # e.g. 16, 32, 64
        widths[-1] = dim
        self.stem = _Stage(in_chans, widths[0], kernel=5, norm=norm, residual=residual)
        self.stages = nn.ModuleList(
            _Stage(widths[i], widths[i + 1], norm=norm, residual=residual) for i in range(stages - 1)
        )
        grid = image_size // 2**stages
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid, grid)[None])  # (1, D, h, w)
        self.norm = nn.LayerNorm(dim)

    @property
    def num_features(self) -> int:
        """Token width D (timm's name)."""
        return self.dim

    @property
    def out_dim(self) -> int:
        """Token width D."""
        return self.dim

    @property
    def pretrained_cfg(self) -> dict:
        """timm-style data config: the input size the position table is sized for and ImageNet mean / std."""
        return {
            "input_size": (self.in_chans, self.image_size, self.image_size),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        }

    @property
    def grid_size(self) -> tuple[int, int]:
        """The (h, w) token grid the position table is stored at."""
        return tuple(self.pos_embed.shape[-2:])

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """(1, D, h, w): the stored table, bilinearly resized when the grid differs."""
        if (h, w) == self.grid_size:
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens in row-major grid order (timm's name; same as `forward`)."""
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens in row-major grid order."""
        check_tensor("x", x, dtype="float")
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x must have shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        x = self.stem(x.contiguous(memory_format=torch.channels_last))  # NHWC convs are faster on CPU
        for stage in self.stages:
            x = stage(x)
        x = x + self._pos_embed(*x.shape[-2:])
        tokens = rearrange(x, "b d h w -> b (h w) d")  # (B, N, D)
        return self.norm(tokens)

    def extra_repr(self) -> str:
        n = count_parameters(self).total
        params = f"{n / 1e3:.1f}k" if n < 1e6 else f"{n / 1e6:.2f}M"
        return f"dim={self.dim}, stages={self.stages}, grid={self.grid_size}, params={params}"
