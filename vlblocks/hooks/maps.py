"""From recorded attention to pictures' worth of numbers: CLS maps, attention rollout, position-embedding similarity.

- `cls_attention_map`: the attention of one query token (CLS, or a distillation token) to the patch tokens, as a
  (B, h, w) grid (Dosovitskiy et al. 2021; DINO, Caron et al. 2021); prefix tokens (CLS, distillation, registers as in
  Darcet et al. 2024) are dropped from the keys.
- `attention_rollout`: attention rollout (Abnar & Zuidema 2020): per layer, heads fused, the lowest entries optionally
  discarded (never the CLS column), identity added for the residual, rows renormalised, layers multiplied.
- `caption_attention_maps`: per generated word, the decoder's cross-attention to the image patches, as (B, T, h, w)
  grids (the per-word figure of Xu et al. 2015, "Show, Attend and Tell"), from
  `GPT2Decoder.generate(..., return_cross_attentions=layers).cross_attentions`.
- `position_embedding_similarity`: cosine similarity of each patch position's embedding to all others, one (h, w) map
  per position (the grid-of-grids figure of Dosovitskiy et al. 2021, Fig. 7).

Shapes: B batch, H heads, N tokens (= P prefix tokens + h*w patches), Nq queries, Nk keys, D width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vlblocks._checks import check_choice, check_nonneg_int, check_probability, check_tensor

__all__ = ["attention_rollout", "caption_attention_maps", "cls_attention_map", "position_embedding_similarity"]

HEAD_FUSIONS = ("mean", "max", "min")


def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(grid, int) and not isinstance(grid, bool) and grid > 0:
        return grid, grid
    if isinstance(grid, Sequence) and len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid):
        return int(grid[0]), int(grid[1])
    raise ValueError(f"grid must be a positive int or a pair (h, w) of positive ints, got {grid!r}")


def _fuse_heads(maps: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """(B, H, Nq, Nk) -> (B, Nq, Nk); a 3-D input is already fused."""
    if maps.dim() == 3:
        return maps
    if head_fusion == "mean":
        return maps.mean(dim=1)
    return maps.amax(dim=1) if head_fusion == "max" else maps.amin(dim=1)


def cls_attention_map(
    maps: torch.Tensor,
    *,
    grid: int | Sequence[int],
    prefix_tokens: int = 1,
    query: int = 0,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Attention of one query token to the patch tokens, laid out on the patch grid.

    Args:
        maps: (B, H, Nq, Nk) recorded probabilities, or (B, Nq, Nk) with heads already reduced (also a rollout).
        grid: patch grid (h, w) (an int for a square grid); Nk must be prefix_tokens + h*w.
        prefix_tokens: tokens before the patches among the keys (1 CLS, +1 distillation token, + registers).
        query: the query row to read: 0 for CLS (or for a recording made with ``rows=0``), 1 for DeiT's
            distillation token.
        head_fusion: how heads are combined: "mean", "max" or "min".

    Returns:
        (B, h, w), not renormalised (the attention a patch gets; the prefix tokens' share is left out).
    """
    h, w = _grid(grid)
    check_tensor("maps", maps, ndim=(3, 4), dtype="float", shape="(B, H, Nq, Nk) or (B, Nq, Nk)")
    check_nonneg_int("prefix_tokens", prefix_tokens)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    nq, nk = maps.shape[-2:]
    if nk != prefix_tokens + h * w:
        raise ValueError(
            f"maps must have prefix_tokens + h*w = {prefix_tokens} + {h * w} keys for grid {(h, w)}, got {nk}"
        )
    if not -nq <= query < nq:
        raise ValueError(f"query must index the {nq} recorded query rows, got {query}")
    row = _fuse_heads(maps, head_fusion)[:, query, prefix_tokens:]  # (B, h*w)
    return row.reshape(-1, h, w)  # (B, h, w)


def caption_attention_maps(
    cross_attentions: Mapping[int, torch.Tensor] | torch.Tensor,
    *,
    grid: int | Sequence[int],
    prefix_tokens: int = 1,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Per generated token, the cross-attention to the image's patch tokens, laid out on the patch grid.

    Args:
        cross_attentions: {layer: (B, T, H, Ni)} as `GPT2Decoder.generate(..., return_cross_attentions=layers)`
            returns them (the layers are averaged), or one (B, T, H, Ni) tensor.
        grid: patch grid (h, w) (an int for a square grid); Ni must be prefix_tokens + h*w.
        prefix_tokens: image tokens before the patches (1: the ViT's CLS token; 0 for patch-only encoders).
        head_fusion: how heads are combined: "mean", "max" or "min".

    Returns:
        (B, T, h, w), not renormalised. Steps after a row's eos hold that row's later queries (or zeros after an
        early stop); `attention_grid(image, maps[b, :n], titles=words)` draws the figure.
    """
    if isinstance(cross_attentions, Mapping):
        if not cross_attentions:
            raise ValueError("cross_attentions is empty: pass return_cross_attentions=[layers] to generate")
        stacked = torch.stack([cross_attentions[k] for k in sorted(cross_attentions)])  # (layers, B, T, H, Ni)
        maps = stacked.mean(dim=0)
    else:
        maps = cross_attentions
    check_tensor("cross_attentions", maps, ndim=4, dtype="float", shape="(B, T, H, Ni)")
    b, t, _, nk = maps.shape
    h, w = _grid(grid)
    check_nonneg_int("prefix_tokens", prefix_tokens)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if nk != prefix_tokens + h * w:
        raise ValueError(
            f"cross_attentions must have prefix_tokens + h*w = {prefix_tokens} + {h * w} image tokens for grid "
            f"{(h, w)}, got {nk}"
        )
    fused = _fuse_heads(maps.transpose(1, 2), head_fusion)  # (B, T, Ni)
    return fused[..., prefix_tokens:].reshape(b, t, h, w)  # (B, T, h, w)


def attention_rollout(
    maps: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Attention rollout through the layers, first to last (Abnar & Zuidema 2020).

    For each layer: fuse heads -> A (B, N, N); set the `discard_ratio` lowest entries of each item to 0, except the
    first column (attention to CLS); A' = (A + I) / 2 with rows renormalised; R = A'_L ... A'_2 A'_1.

    Args:
        maps: per layer (B, H, N, N) (or (B, N, N)), in layer order; a dict is read in its order (as
            `rec.maps` of `record_attention`, which keeps model order).
        discard_ratio: fraction in [0, 1) of the entries of each fused map set to zero.
        head_fusion: "mean", "max" or "min" over heads.

    Returns:
        (B, N, N) rollout; row 0 is what `cls_attention_map(rollout, ...)` reads.
    """
    layers = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    if not layers:
        raise ValueError("maps must hold at least one layer's attention, got none")
    check_probability("discard_ratio", discard_ratio, closed_high=False)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    first = check_tensor("maps[0]", layers[0], ndim=(3, 4), dtype="float", shape="(B, H, N, N)")
    b, n = first.shape[0], first.shape[-1]
    for i, layer in enumerate(layers):
        check_tensor(f"maps[{i}]", layer, ndim=(3, 4), dtype="float", shape="(B, H, N, N)")
        if layer.shape[0] != b or layer.shape[-2:] != (n, n):
            raise ValueError(f"maps[{i}] must have shape (B={b}, ..., {n}, {n}), got {tuple(layer.shape)}")
    eye = torch.eye(n, device=first.device)
    rollout = eye.expand(b, n, n)
    for layer in layers:
        fused = _fuse_heads(layer.float(), head_fusion)  # (B, N, N)
        if discard_ratio > 0:
            fused = _discard_lowest(fused, discard_ratio)
        a = (fused + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout  # (B, N, N)
    return rollout


def _discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the `ratio` lowest entries of each (N, N) map among the non-CLS columns."""
    b, n, _ = fused.shape
    candidates = fused[:, :, 1:].reshape(b, -1)  # (B, N*(N-1)): every column but CLS
    count = int(candidates.shape[1] * ratio)
    if count == 0:
        return fused
    lowest = candidates.topk(count, dim=-1, largest=False).indices  # (B, count)
    kept = candidates.scatter(1, lowest, 0.0).reshape(b, n, n - 1)
    return torch.cat([fused[:, :, :1], kept], dim=2)  # (B, N, N)


def _pos_embed_of(model: nn.Module) -> tuple[torch.Tensor, int | None, tuple[int, int] | None]:
    """(pos_embed (N, D), prefix tokens it holds, patch grid) read from a timm or HF model."""
    if isinstance(getattr(model, "pos_embed", None), torch.Tensor):  # timm ViT / DeiT / EVA
        pos = model.pos_embed.reshape(-1, model.pos_embed.shape[-1])
        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", None)
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        return pos, prefix, tuple(grid) if grid is not None else None
    embeddings = getattr(model, "embeddings", None)
    if embeddings is None:  # an HF wrapper (ViTForImageClassification, CLIPModel...) holds the encoder inside
        for child_name in ("vit", "dinov2", "vision_model", "model"):
            child = getattr(model, child_name, None)
            if isinstance(child, nn.Module):
                return _pos_embed_of(child)
        raise ValueError(
            f"found no position embedding in {type(model).__name__} (timm pos_embed or HF embeddings)"
        )
    table = getattr(embeddings, "position_embeddings", None)  # HF ViT / DINOv2: Parameter (1, 1 + N, D)
    if table is None:
        table = getattr(embeddings, "position_embedding", None)  # HF CLIP / SigLIP: nn.Embedding (N + 1, D)
    weight = table.weight if isinstance(table, nn.Embedding) else table
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"found no position embedding in {type(model).__name__}.embeddings")
    return weight.reshape(-1, weight.shape[-1]), None, None


def _square_grid(rows: int, prefix_tokens: int | None) -> tuple[int, int]:
    """The square patch grid of a table of `rows` embeddings (with `prefix_tokens` before the patches, or 0 or 1)."""
    candidates = [rows - prefix_tokens] if prefix_tokens is not None else [rows, rows - 1]
    for patches in candidates:
        side = math.isqrt(max(patches, 0))
        if side > 0 and side * side == patches:
            return side, side
    raise ValueError(f"cannot infer a square patch grid from {rows} position embeddings; pass grid=(h, w)")


def position_embedding_similarity(
    model_or_pos_embed: nn.Module | torch.Tensor,
    *,
    grid: int | Sequence[int] | None = None,
    prefix_tokens: int | None = None,
) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding to every patch's, one map per patch.

    Args:
        model_or_pos_embed: a timm ViT-like model (`pos_embed`, with `no_embed_class` respected), an HF vision model
            (`embeddings.position_embeddings` or `embeddings.position_embedding`), or a tensor (N, D) / (1, N, D).
        grid: patch grid (h, w); default: the model's, else the square root of the patch count.
        prefix_tokens: rows before the patches in the table (CLS, registers); default: the model's (timm), or
            N - h*w (HF, tensors with a grid).

    Returns:
        (h*w, h, w): map i is the similarity of patch i (row-major) to all patches; diagonal 1, symmetric.
    """
    model_prefix, model_grid = None, None
    if isinstance(model_or_pos_embed, nn.Module):
        pos, model_prefix, model_grid = _pos_embed_of(model_or_pos_embed)
    else:
        pos = check_tensor(
            "model_or_pos_embed", model_or_pos_embed, ndim=(2, 3), dtype="float", shape="(N, D)"
        )
        pos = pos.reshape(-1, pos.shape[-1])  # (N, D)
    pos = pos.detach().float()
    if grid is None:
        grid = model_grid
    if prefix_tokens is None:
        prefix_tokens = model_prefix
    if grid is None:
        grid = _square_grid(pos.shape[0], prefix_tokens)
    h, w = _grid(grid)
    if prefix_tokens is None:
        prefix_tokens = pos.shape[0] - h * w
    check_nonneg_int("prefix_tokens", prefix_tokens)
    if pos.shape[0] != prefix_tokens + h * w:
        raise ValueError(
            f"position embeddings must hold prefix_tokens + h*w = {prefix_tokens} + {h * w} rows for grid "
            f"{(h, w)}, got {pos.shape[0]}"
        )
    patches = torch.nn.functional.normalize(pos[prefix_tokens:], dim=-1)  # (h*w, D)
    return (patches @ patches.T).reshape(h * w, h, w)  # (h*w, h, w)
