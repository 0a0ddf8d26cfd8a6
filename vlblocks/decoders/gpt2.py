"""GPT-2 decoder with cross-attention over image tokens (cross mode) or a visual prefix (prefix mode).

GPT-2 (Radford et al. 2019) built from vlblocks `Attention` / `Mlp`, with HF's parameter names
(`transformer.wte`, `transformer.h.{i}.attn.c_attn`, `...crossattention.q_attn`, `ln_cross_attn`, `transformer.ln_f`,
`lm_head`) but `nn.Linear` projections, so HF GPT-2 and ViT-GPT-2 (`VisionEncoderDecoderModel`) checkpoints load by
name (see `loading.py`) and LoRA / hooks treat it like any model.

- cross mode (HF's GPT-2 with `add_cross_attention`; Vinyals et al. 2015 / ViT-GPT-2): each block is
  ln_1 -> causal self-attention -> ln_cross_attn -> cross-attention (queries from text, keys / values from the image
  tokens) -> ln_2 -> MLP, each with a residual. Cross-attention added to a checkpoint that has none starts with a
  zero output projection, so the decoder computes exactly the pretrained GPT-2 at step 0.
- prefix mode (LLaVA, Liu et al. 2023): image tokens pass `visual_proj` and a LayerNorm `visual_norm` (its gain
  starts at the token embeddings' standard deviation, so the image tokens do not swamp the text) and are prepended to
  the text embeddings; positions and masks count the prefix; only text positions reach the LM head.

Shapes: B batch, T text tokens, Ni image tokens, Di image width (`dim_image`), D width (`n_embd`), H heads,
Dh head width, V vocabulary, L cache length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from einops import rearrange
from torch import nn

from vlblocks._checks import check_choice, check_dropout, check_positive_int, check_tensor
from vlblocks.decoders.loss import IGNORE_INDEX, next_token_loss
from vlblocks.layers.attention import Attention, KVCache
from vlblocks.layers.mlp import Mlp

__all__ = ["IGNORE_INDEX", "DecoderOutput", "GPT2Block", "GPT2Decoder", "GPT2DecoderConfig"]


_ACT = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}


@dataclass
class GPT2DecoderConfig:
    """The fields of HF `GPT2Config` the decoder uses, plus how the image enters.

    `cross_attention` adds cross-attention blocks (mode "cross"); `mode="prefix"` prepends projected image tokens
    instead; `dim_image` is the width of the image tokens (default `n_embd`).
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    cross_attention: bool = False
    dim_image: int | None = None
    mode: str = "cross"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be divisible by n_head={self.n_head}, got {self.n_embd}")
        check_choice("activation_function", self.activation_function, list(_ACT))
        check_choice("mode", self.mode, ["cross", "prefix"])
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            check_dropout(name, getattr(self, name))
        if self.dim_image is not None:
            check_positive_int("dim_image", self.dim_image)

    @property
    def image_width(self) -> int:
        return self.dim_image or self.n_embd

    @classmethod
    def from_hf(cls, hf_config: Any | dict, **overrides: Any) -> GPT2DecoderConfig:
        """From an HF `GPT2Config` (or its dict); `add_cross_attention` becomes `cross_attention`."""
        data = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("cross_attention", bool(data.get("add_cross_attention", False)))
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecoderOutput:
    """logits (B, T, V) over the text positions; loss: mean next-token cross-entropy, or None without labels."""

    logits: torch.Tensor
    loss: torch.Tensor | None


class GPT2SelfAttention(Attention):
    """Causal self-attention with HF's fused `c_attn` (D -> 3D) and `c_proj`; the attention core is `Attention`'s."""

    def __init__(self, config: GPT2DecoderConfig, layer_idx: int) -> None:
        super().__init__(config.n_embd, heads=config.n_head, causal=True, dropout=config.attn_pdrop)
        _strip_projections(self)
        self.scale = _scale(config, layer_idx)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); `mask` (B, N or L) key padding, `kv_cache` / `positions` (N,) cache slots."""
        q, k, v = self.c_attn(x).split(self.dim, dim=-1)  # 3 x (B, N, D)
        kv = tuple(rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (k, v))  # (B, H, N, Dh)
        out = super().forward(q, mask=mask, context_kv=kv, kv_cache=kv_cache, positions=positions)
        return self.resid_dropout(self.c_proj(out))


class GPT2CrossAttention(Attention):
    """Cross-attention from text to image tokens with HF's `q_attn` (D -> D), `c_attn` (Di -> 2D), `c_proj`.

    The image keys / values come from `project_context` once per image; when the text batch holds G rows per image
    (beams), the G rows' queries are attended as one longer query block, so the image K/V are never copied.
    """

    def __init__(self, config: GPT2DecoderConfig, layer_idx: int) -> None:
        dim = config.n_embd
        super().__init__(dim, heads=config.n_head, dim_context=config.image_width, dropout=config.attn_pdrop)
        _strip_projections(self)
        self.scale = _scale(config, layer_idx)
        self.q_attn = nn.Linear(dim, dim)
        self.c_attn = nn.Linear(config.image_width, 2 * dim)
        self.c_proj = nn.Linear(dim, dim)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens (B, Ni, Di) -> keys, values (B, H, Ni, Dh)."""
        k, v = self.c_attn(context).split(self.dim, dim=-1)  # 2 x (B, Ni, D)
        k = rearrange(k, "b n (h d) -> b h n d", h=self.heads)
        v = rearrange(v, "b n (h d) -> b h n d", h=self.heads)
        return k, v

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        *,
        context_kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B*G, N, D), context_kv (B, H, Ni, Dh), mask (B, Ni) -> (B*G, N, D)."""
        b = context_kv[0].shape[0]
        q = rearrange(self.q_attn(x), "(b g) n d -> b (g n) d", b=b)  # (B, G*N, D)
        out = super().forward(q, mask=mask, context_kv=context_kv)  # (B, G*N, D)
        out = rearrange(out, "b (g n) d -> (b g) n d", g=x.shape[0] // b)  # (B*G, N, D)
        return self.resid_dropout(self.c_proj(out))


class GPT2Mlp(Mlp):
    """GPT-2's MLP (`c_fc` -> GELU-tanh -> `c_proj` -> dropout): vlblocks `Mlp` with HF's names."""

    def __init__(self, config: GPT2DecoderConfig) -> None:
        hidden = config.n_inner or 4 * config.n_embd
        act = _ACT[config.activation_function]
        super().__init__(config.n_embd, hidden_dim=hidden, act=act, dropout=config.resid_pdrop)
        self.c_fc, self.c_proj = self.fc1, self.fc2
        del self.fc1, self.fc2, self.drop1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return self.drop2(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    """One GPT-2 layer: self-attention, optional cross-attention, MLP; pre-norm residuals."""

    def __init__(self, config: GPT2DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        eps = config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps)
        self.attn = GPT2SelfAttention(config, layer_idx)
        self.has_cross = config.cross_attention and config.mode == "cross"
        if self.has_cross:
            self.ln_cross_attn = nn.LayerNorm(config.n_embd, eps=eps)
            self.crossattention = GPT2CrossAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps)
        self.mlp = GPT2Mlp(config)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); cross_kv (B', H, Ni, Dh) with B a multiple of B'."""
        x = x + self.attn(self.ln_1(x), mask=mask, kv_cache=kv_cache, positions=positions)
        if self.has_cross and cross_kv is not None:
            x = x + self.crossattention(self.ln_cross_attn(x), context_kv=cross_kv)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """HF's `transformer` namespace: wte, wpe, drop, h, ln_f."""

    def __init__(self, config: GPT2DecoderConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT2Decoder(nn.Module):
    """GPT-2 language model conditioned on image tokens by cross-attention or by a visual prefix.

    Args:
        config: a `GPT2DecoderConfig`.

    Attributes:
        transformer (wte, wpe, h, ln_f), lm_head (tied to wte), and in prefix mode visual_proj / visual_norm.
    """

    def __init__(self, config: GPT2DecoderConfig) -> None:
        super().__init__()
        if not isinstance(config, GPT2DecoderConfig):
            raise TypeError(f"config must be a GPT2DecoderConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = _Transformer(config)
        if config.mode == "prefix":
            self.visual_proj = nn.Linear(config.image_width, config.n_embd)
            self.visual_norm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(_init_weights)
        for block in self.transformer.h:  # GPT-2's scaled init of residual projections
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layer))
        self.lm_head.weight = self.transformer.wte.weight
        self.soft_prompt: nn.Module | None = None  # a `vlblocks.peft.SoftPrompt` set by prompt tuning
        self.zero_init_cross_attention()
        self.reset_prefix_scale()

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.n_embd

    @property
    def has_image_input(self) -> bool:
        """True when the decoder reads image tokens (cross-attention or prefix)."""
        return self.config.mode == "prefix" or self.config.cross_attention

    def reset_prefix_scale(self) -> None:
        """Prefix mode: set `visual_norm`'s gain to the std of the token embeddings (the text's scale)."""
        if self.config.mode == "prefix":
            with torch.no_grad():
                self.visual_norm.weight.fill_(self.transformer.wte.weight.float().std().item())
                self.visual_norm.bias.zero_()

    def zero_init_cross_attention(self) -> None:
        """Zero every cross-attention output projection: the decoder then computes exactly the plain GPT-2."""
        with torch.no_grad():
            for block in self.transformer.h:
                if block.has_cross:
                    block.crossattention.c_proj.weight.zero_()
                    block.crossattention.c_proj.bias.zero_()

    # ------------------------------------------------------------------ building blocks used by generation
    def check_image_embeds(self, image_embeds: torch.Tensor | None, batch: int | None = None) -> None:
        """Raise a clear error when image tokens are missing, unexpected or of the wrong width."""
        width = self.config.image_width
        if image_embeds is None:
            if self.has_image_input:
                raise ValueError(f"image_embeds (B, Ni, {width}) is required by this decoder")
            return
        check_tensor("image_embeds", image_embeds, ndim=3, dtype="float", shape=f"(B, Ni, {width})")
        if image_embeds.shape[-1] != width:
            raise ValueError(f"image_embeds must have shape (B, Ni, {width}), got {tuple(image_embeds.shape)}")
        if batch is not None and image_embeds.shape[0] != batch:
            raise ValueError(f"image_embeds must have batch size {batch}, got {image_embeds.shape[0]}")
        if not self.has_image_input:
            raise ValueError("image_embeds given, but this decoder has neither cross-attention nor a prefix")

    def prefix_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Prefix mode: image tokens (B, Ni, Di) -> normalised prefix embeddings (B, Ni, D)."""
        return self.visual_norm(self.visual_proj(image_embeds))

    def input_prefix(self, image_embeds: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """What precedes the text (B, Np, D): the visual prefix (prefix mode), then the soft prompt's P virtual
        tokens when `soft_prompt` is set (prompt tuning, Lester et al. 2021); None when there is neither."""
        parts = []
        if self.config.mode == "prefix" and image_embeds is not None:
            parts.append(self.prefix_embeds(image_embeds))  # (B, Ni, D)
        if self.soft_prompt is not None:
            parts.append(self.soft_prompt.embedding.unsqueeze(0).expand(batch, -1, -1))  # (P, D) -> (B, P, D)
        if not parts:
            return None
        return torch.cat([part.to(self.transformer.wte.weight.dtype) for part in parts], dim=1)  # (B, Np, D)

    def cross_kv(self, image_embeds: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per layer, the image keys / values (B, H, Ni, Dh) (None where a layer has no cross-attention)."""
        if image_embeds is None or self.config.mode != "cross":
            return [None] * len(self.transformer.h)
        return [
            blk.crossattention.project_context(image_embeds) if blk.has_cross else None for blk in self.transformer.h
        ]

    def run_blocks(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None],
        caches: list[KVCache] | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedded tokens (B, N, D) through every block and ln_f -> (B, N, D)."""
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            cache = None if caches is None else caches[i]
            x = block(x, mask=mask, cross_kv=cross_kv[i], kv_cache=cache, positions=positions)
        return self.transformer.ln_f(x)

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        input_ids: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Teacher-forced logits and loss.

        Args:
            input_ids: (B, T) token ids.
            image_embeds: (B, Ni, Di) image tokens (required in cross mode with cross-attention, and prefix mode).
            attention_mask: (B, T) 1 / True on real tokens; positions count real tokens only (left padding works).
            labels: (B, T) target ids, usually `input_ids`; position t predicts labels[t + 1]; -100 and padded
                positions are ignored.

        Returns:
            DecoderOutput(logits (B, T, V), loss scalar or None).
        """
        check_tensor("input_ids", input_ids, ndim=2, dtype="int", shape="(B, T)")
        b, t = input_ids.shape
        self.check_image_embeds(image_embeds, b)
        mask = _bool_mask(attention_mask, (b, t))
        x = self.transformer.wte(input_ids)  # (B, T, D)
        prefix = 0
        pre = self.input_prefix(image_embeds, b)  # (B, Np, D) or None
        if pre is not None:
            prefix = pre.shape[1]
            x = torch.cat([pre, x], dim=1)  # (B, Np + T, D)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, prefix), mask], dim=1)  # (B, Np + T)
        n = x.shape[1]
        if n > self.config.n_positions:
            raise ValueError(f"sequence length ({n}) must be <= n_positions={self.config.n_positions}")
        x = x + self.transformer.wpe(position_ids(mask, b, n, x.device))
        h = self.run_blocks(x, mask=mask, cross_kv=self.cross_kv(image_embeds))[:, prefix:]  # (B, T, D)
        logits = self.lm_head(h)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = next_token_loss(logits, labels, attention_mask)
        return DecoderOutput(logits=logits, loss=loss)

    # ------------------------------------------------------------------ generation / loading
    def generate(self, image_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None, **kwargs: Any):
        """Decode tokens: see `vlblocks.generation.generate` for every argument. Returns a `GenerationOutput`."""
        from vlblocks.generation.search import generate

        return generate(self, image_embeds, input_ids, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> GPT2Decoder:
        """Load an HF GPT-2 checkpoint or the decoder of a ViT-GPT-2 one: see `vlblocks.decoders.loading`."""
        from vlblocks.decoders.loading import load_gpt2

        return load_gpt2(cls, name_or_path, **kwargs)


def position_ids(mask: torch.Tensor | None, batch: int, n: int, device: torch.device) -> torch.Tensor:
    """Positions (B, N) counting real tokens only (left padding gets position 0), or 0..N-1 without a mask."""
    if mask is None:
        return torch.arange(n, device=device).expand(batch, n)  # (B, N)
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, N)


def _bool_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    check_tensor("attention_mask", attention_mask, ndim=2, shape="(B, T)")
    if tuple(attention_mask.shape) != shape:
        raise ValueError(f"attention_mask must have shape {shape}, got {tuple(attention_mask.shape)}")
    return attention_mask.bool()


def _strip_projections(attn: Attention) -> None:
    """Replace `Attention`'s own q / k / v / proj by identities: the GPT-2 modules project with HF's layout."""
    for name in ("q", "k", "v", "proj"):
        delattr(attn, name)
        setattr(attn, name, nn.Identity())
    attn.proj_drop = nn.Identity()


def _scale(config: GPT2DecoderConfig, layer_idx: int) -> float:
    scale = (config.n_embd // config.n_head) ** -0.5 if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scale /= float(layer_idx + 1)
    return scale


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
