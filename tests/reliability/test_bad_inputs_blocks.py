"""Bad-input suite for the blocks: every public constructor and forward of layers, peft (but io), fusion, heads,
models, encoders, metrics.vqa and the package-root utilities, fed wrong types, ranges, shapes, empty batches,
non-finite numbers and out-of-vocabulary ids.

Each case either expects an error (`Err`: the exception type and the argument name, which must appear in the
message as a word, plus an optional extra pattern) or a documented result (`Doc`: a check on the returned value).
`test_counts` prints the totals recorded in docs/design-notes.md ("Bad-input suite: blocks").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from vlblocks.encoders import ConvNet, EncoderOutput, ImageConfig, ImageEncoder, TextEncoder
from vlblocks.fusion import CoAttentionFusion, CoAttentionLayer, ConcatFusion
from vlblocks.heads import MLPHead
from vlblocks.layers import Attention, KVCache, Mlp
from vlblocks.metrics.vqa import (
    normalize_vqa_answer,
    vqa_accuracy,
    vqa_accuracy_by_type,
    vqa_accuracy_per_question,
    vqa_question_accuracy,
)
from vlblocks.models import VQAModel
from vlblocks.peft import (
    BottleneckAdapter,
    LoRAEmbedding,
    LoRALinear,
    SoftPrompt,
    apply_adapters,
    apply_lora,
    mark_only_peft_trainable,
)
from vlblocks.peft.lora import LoRADropout
from vlblocks.utils import count_parameters

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Err:
    """The call raises `exc` and the message names `arg` (as a word), and matches `extra` when given."""

    exc: type[Exception]
    arg: str
    extra: str | None = None


@dataclass(frozen=True)
class Doc:
    """The call returns a value for which `check(value)` holds (the documented result); `what` says which."""

    what: str
    check: Callable[[Any], bool]


# ----------------------------------------------------------------------------- fixtures built once

torch.manual_seed(0)
_ATTN = Attention(16, heads=2, dim_context=8).eval()
_SELF = Attention(16, heads=2).eval()
_MLP = Mlp(16, hidden_dim=32, out_dim=8)
_HEAD = MLPHead(16, 5, hidden_dim=8).eval()
_FUSION = CoAttentionFusion(12, 8, dim=16, heads=2, summary="max").eval()
_CONCAT = ConcatFusion(12, 8, dim=16).eval()
_PROMPT = SoftPrompt(3, 16)
_CONVNET = ConvNet(dim=16, stages=2, image_size=16).eval()
_IMAGE = ImageEncoder(_CONVNET).eval()


def _tokenizer():
    from vlblocks.data import build_word_tokenizer

    return build_word_tokenizer(["what color is the circle", "is there a red square"])


_TOK = _tokenizer()
_TEXT = TextEncoder.tiny("bert", tokenizer=_TOK, dim=16, depth=1, heads=2, max_positions=16).eval()
_V = _TEXT.vocab_size


class _TextStub(nn.Module):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        tokens = torch.ones(*input_ids.shape, 8)
        return EncoderOutput(tokens, None, tokens[:, 0])


_VQA = VQAModel(_IMAGE, _TextStub(), ConcatFusion(16, 8, dim=16), MLPHead(16, 4)).eval()


def _x(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape).to(dtype) if dtype.is_floating_point else torch.ones(*shape, dtype=dtype)


def _ids(b: int = 2, t: int = 5) -> torch.Tensor:
    return torch.randint(0, _V, (b, t))


def _lora_linear(**kw: Any) -> Callable[[], Any]:
    return lambda: LoRALinear.from_layer(nn.Linear(4, 4), **{"r": 2, "alpha": 4, **kw})


def _finite(out: Any) -> bool:
    t = out.pooled if hasattr(out, "pooled") else out
    return bool(torch.isfinite(t).all())


def _empty(shape: tuple[int, ...]) -> Callable[[Any], bool]:
    def check(out: Any) -> bool:
        t = out.pooled if hasattr(out, "pooled") else out
        return tuple(t.shape) == shape

    return check


def _fully_padded_text() -> Any:
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1] = False
    return _FUSION(_x(2, 3, 12), _x(2, 4, 8), text_mask=mask)


def _minus_inf_row() -> Any:
    bias = torch.zeros(3, 3)
    bias[0] = -INF
    return _SELF(_x(1, 3, 16), attn_mask=bias)


# ----------------------------------------------------------------------------- the table

CASES: dict[str, tuple[Callable[[], Any], Err | Doc]] = {
    # --- Attention / KVCache constructors
    "Attention(dim=0)": (lambda: Attention(0), Err(ValueError, "dim")),
    "Attention(dim=2.5)": (lambda: Attention(2.5), Err(ValueError, "dim")),
    "Attention(dim='16')": (lambda: Attention("16"), Err(ValueError, "dim")),
    "Attention(heads=0)": (lambda: Attention(16, heads=0), Err(ValueError, "heads")),
    "Attention(heads=True)": (lambda: Attention(16, heads=True), Err(ValueError, "heads")),
    "Attention(heads=3) indivisible": (lambda: Attention(16, heads=3), Err(ValueError, "heads")),
    "Attention(dim_head=0)": (lambda: Attention(16, heads=2, dim_head=0), Err(ValueError, "dim_head")),
    "Attention(dim_context=0)": (lambda: Attention(16, heads=2, dim_context=0), Err(ValueError, "dim_context")),
    "Attention(dim_context=-8)": (lambda: Attention(16, heads=2, dim_context=-8), Err(ValueError, "dim_context")),
    "Attention(dropout=1.0)": (lambda: Attention(16, heads=2, dropout=1.0), Err(ValueError, "dropout")),
    "Attention(dropout=-0.1)": (lambda: Attention(16, heads=2, dropout=-0.1), Err(ValueError, "dropout")),
    "Attention(dropout=nan)": (lambda: Attention(16, heads=2, dropout=NAN), Err(ValueError, "dropout")),
    "Attention(dropout='0.1')": (lambda: Attention(16, heads=2, dropout="0.1"), Err(ValueError, "dropout")),
    "KVCache(batch=0)": (lambda: KVCache(0, 2, 4, 8), Err(ValueError, "batch")),
    "KVCache(heads=True)": (lambda: KVCache(1, True, 4, 8), Err(ValueError, "heads")),
    "KVCache(max_len=-1)": (lambda: KVCache(1, 2, -1, 8), Err(ValueError, "max_len")),
    "KVCache(dim_head=1.5)": (lambda: KVCache(1, 2, 4, 1.5), Err(ValueError, "dim_head")),
    # --- Attention forward
    "Attention x=list": (lambda: _ATTN([[0.0] * 16]), Err(TypeError, "x")),
    "Attention x int": (lambda: _ATTN(_x(2, 3, 16, dtype=torch.long)), Err(TypeError, "x")),
    "Attention x wrong width": (lambda: _ATTN(_x(2, 3, 15)), Err(ValueError, "x")),
    "Attention x 2-D": (lambda: _ATTN(_x(3, 16)), Err(ValueError, "x")),
    "Attention context wrong width": (lambda: _ATTN(_x(2, 3, 16), _x(2, 4, 16)), Err(ValueError, "context")),
    "Attention context batch": (lambda: _ATTN(_x(2, 3, 16), _x(3, 4, 8)), Err(ValueError, "context")),
    "Attention context int": (
        lambda: _ATTN(_x(2, 3, 16), _x(2, 4, 8, dtype=torch.long)),
        Err(TypeError, "context"),
    ),
    "Attention mask float": (
        lambda: _ATTN(_x(2, 3, 16), _x(2, 4, 8), mask=torch.ones(2, 4)),
        Err(TypeError, "mask"),
    ),
    "Attention mask shape": (
        lambda: _ATTN(_x(2, 3, 16), _x(2, 4, 8), mask=torch.ones(2, 5, dtype=torch.bool)),
        Err(ValueError, "mask"),
    ),
    "Attention attn_mask int 0/1": (
        lambda: _SELF(_x(1, 3, 16), attn_mask=torch.ones(3, 3, dtype=torch.long)),
        Err(TypeError, "attn_mask", "torch.int64"),
    ),
    "Attention attn_mask wrong (Nq, Nk)": (
        lambda: _SELF(_x(1, 3, 16), attn_mask=torch.ones(3, 4, dtype=torch.bool)),
        Err(ValueError, "attn_mask"),
    ),
    "Attention attn_mask 5-D": (
        lambda: _SELF(_x(1, 3, 16), attn_mask=torch.ones(1, 1, 1, 3, 3, dtype=torch.bool)),
        Err(ValueError, "attn_mask"),
    ),
    "Attention attn_mask list": (lambda: _SELF(_x(1, 3, 16), attn_mask=[[True]]), Err(TypeError, "attn_mask")),
    "Attention cross layer without context": (lambda: _ATTN(_x(1, 3, 16)), Err(ValueError, "context")),
    "Attention kv_cache without positions": (
        lambda: Attention(16, heads=2)(_x(1, 1, 16), kv_cache=KVCache(1, 2, 4, 8)),
        Err(ValueError, "positions"),
    ),
    "Attention B=0": (lambda: _ATTN(_x(0, 3, 16), _x(0, 4, 8)), Doc("empty batch out", _empty((0, 3, 16)))),
    "Attention all -inf row": (_minus_inf_row, Doc("finite (row is zeros)", _finite)),
    "Attention all keys padded": (
        lambda: _ATTN(_x(1, 3, 16), _x(1, 4, 8), mask=torch.zeros(1, 4, dtype=torch.bool)),
        Doc("finite (zeros)", _finite),
    ),
    "Attention NaN input": (
        lambda: _SELF(torch.full((1, 3, 16), NAN)),
        Doc("NaN propagates (not checked: a check would sync the host)", lambda o: bool(o.isnan().all())),
    ),
    # --- Mlp
    "Mlp(dim=0)": (lambda: Mlp(0), Err(ValueError, "dim")),
    "Mlp(hidden_dim=0)": (lambda: Mlp(8, hidden_dim=0), Err(ValueError, "hidden_dim")),
    "Mlp(out_dim=0)": (lambda: Mlp(8, out_dim=0), Err(ValueError, "out_dim")),
    "Mlp(out_dim=-1)": (lambda: Mlp(8, out_dim=-1), Err(ValueError, "out_dim")),
    "Mlp(mlp_ratio=0)": (lambda: Mlp(8, mlp_ratio=0), Err(ValueError, "mlp_ratio")),
    "Mlp(mlp_ratio=inf)": (lambda: Mlp(8, mlp_ratio=INF), Err(ValueError, "mlp_ratio")),
    "Mlp(mlp_ratio=nan)": (lambda: Mlp(8, mlp_ratio=NAN), Err(ValueError, "mlp_ratio")),
    "Mlp(mlp_ratio=0.01) -> 0 wide": (lambda: Mlp(8, mlp_ratio=0.01), Err(ValueError, "mlp_ratio")),
    "Mlp(dropout=1)": (lambda: Mlp(8, dropout=1), Err(ValueError, "dropout")),
    "Mlp(act='nope')": (lambda: Mlp(8, act="nope"), Err(ValueError, "act")),
    "Mlp(act=3)": (lambda: Mlp(8, act=3), Err(TypeError, "act")),
    "Mlp x wrong width": (lambda: _MLP(_x(2, 15)), Err(ValueError, "x")),
    "Mlp x int": (lambda: _MLP(_x(2, 16, dtype=torch.long)), Err(TypeError, "x")),
    "Mlp x=None": (lambda: _MLP(None), Err(TypeError, "x")),
    "Mlp B=0": (lambda: _MLP(_x(0, 16)), Doc("empty batch out", _empty((0, 8)))),
    # --- MLPHead
    "MLPHead(dim=0)": (lambda: MLPHead(0, 3), Err(ValueError, "dim")),
    "MLPHead(num_classes=0)": (lambda: MLPHead(8, 0), Err(ValueError, "num_classes")),
    "MLPHead(num_classes=True)": (lambda: MLPHead(8, True), Err(ValueError, "num_classes")),
    "MLPHead(hidden_dim=0)": (lambda: MLPHead(8, 3, hidden_dim=0), Err(ValueError, "hidden_dim")),
    "MLPHead(hidden_dim=2.0)": (lambda: MLPHead(8, 3, hidden_dim=2.0), Err(ValueError, "hidden_dim")),
    "MLPHead(dropout=1)": (lambda: MLPHead(8, 3, dropout=1), Err(ValueError, "dropout")),
    "MLPHead(act='x')": (lambda: MLPHead(8, 3, hidden_dim=4, act="x"), Err(ValueError, "act")),
    "MLPHead x wrong width": (lambda: _HEAD(_x(2, 15)), Err(ValueError, "x")),
    "MLPHead x 3-D": (lambda: _HEAD(_x(2, 3, 16)), Err(ValueError, "x")),
    "MLPHead x int": (lambda: _HEAD(_x(2, 16, dtype=torch.long)), Err(TypeError, "x")),
    "MLPHead B=0": (lambda: _HEAD(_x(0, 16)), Doc("empty batch out", _empty((0, 5)))),
    # --- fusion constructors
    "CoAttentionLayer(dim=0)": (lambda: CoAttentionLayer(0), Err(ValueError, "dim")),
    "CoAttentionLayer(heads=0)": (lambda: CoAttentionLayer(16, heads=0), Err(ValueError, "heads")),
    "CoAttentionLayer(mlp_ratio=-1)": (lambda: CoAttentionLayer(16, heads=2, mlp_ratio=-1), Err(ValueError, "mlp_ratio")),
    "CoAttentionLayer(dropout=2)": (lambda: CoAttentionLayer(16, heads=2, dropout=2), Err(ValueError, "dropout")),
    "CoAttentionFusion(dim_image=0)": (lambda: CoAttentionFusion(0, 8), Err(ValueError, "dim_image")),
    "CoAttentionFusion(dim_text='8')": (lambda: CoAttentionFusion(8, "8"), Err(ValueError, "dim_text")),
    "CoAttentionFusion(dim=0)": (lambda: CoAttentionFusion(8, 8, dim=0), Err(ValueError, "dim")),
    "CoAttentionFusion(depth=0)": (lambda: CoAttentionFusion(8, 8, depth=0), Err(ValueError, "depth")),
    "CoAttentionFusion(depth=True)": (lambda: CoAttentionFusion(8, 8, depth=True), Err(ValueError, "depth")),
    "CoAttentionFusion(pool='max')": (lambda: CoAttentionFusion(8, 8, pool="max"), Err(ValueError, "pool")),
    "CoAttentionFusion(summary='first')": (
        lambda: CoAttentionFusion(8, 8, summary="first"),
        Err(ValueError, "summary"),
    ),
    "CoAttentionFusion(heads=3)": (lambda: CoAttentionFusion(8, 8, heads=3), Err(ValueError, "heads")),
    "CoAttentionFusion(heads=True)": (lambda: CoAttentionFusion(8, 8, heads=True), Err(ValueError, "heads")),
    "CoAttentionFusion(dropout=-1)": (lambda: CoAttentionFusion(8, 8, heads=2, dropout=-1), Err(ValueError, "dropout")),
    "ConcatFusion(dim_image=0)": (lambda: ConcatFusion(0, 8), Err(ValueError, "dim_image")),
    "ConcatFusion(dim=0)": (lambda: ConcatFusion(8, 8, dim=0), Err(ValueError, "dim")),
    "ConcatFusion(dropout=1)": (lambda: ConcatFusion(8, 8, dropout=1), Err(ValueError, "dropout")),
    # --- fusion forwards
    "CoAttentionFusion image_tokens=None": (lambda: _FUSION(None, _x(2, 4, 8)), Err(TypeError, "image_tokens")),
    "CoAttentionFusion text_tokens int": (
        lambda: _FUSION(_x(2, 3, 12), _x(2, 4, 8, dtype=torch.long)),
        Err(TypeError, "text_tokens"),
    ),
    "CoAttentionFusion image width": (lambda: _FUSION(_x(2, 3, 8), _x(2, 4, 8)), Err(ValueError, "image_tokens")),
    "CoAttentionFusion text 2-D": (lambda: _FUSION(_x(2, 3, 12), _x(2, 8)), Err(ValueError, "text_tokens")),
    "CoAttentionFusion batch mismatch": (lambda: _FUSION(_x(2, 3, 12), _x(3, 4, 8)), Err(ValueError, "text_tokens")),
    "CoAttentionFusion text_mask long": (
        lambda: _FUSION(_x(2, 3, 12), _x(2, 4, 8), text_mask=torch.ones(2, 4, dtype=torch.long)),
        Err(TypeError, "text_mask"),
    ),
    "CoAttentionFusion text_mask list": (
        lambda: _FUSION(_x(2, 3, 12), _x(2, 4, 8), text_mask=[[True] * 4] * 2),
        Err(TypeError, "text_mask"),
    ),
    "CoAttentionFusion image_mask shape": (
        lambda: _FUSION(_x(2, 3, 12), _x(2, 4, 8), image_mask=torch.ones(2, 4, dtype=torch.bool)),
        Err(ValueError, "image_mask"),
    ),
    "CoAttentionFusion B=0": (
        lambda: _FUSION(_x(0, 3, 12), _x(0, 4, 8)),
        Doc("empty batch out", _empty((0, 32))),
    ),
    "CoAttentionFusion fully padded text (max)": (_fully_padded_text, Doc("finite (text summary zeros)", _finite)),
    "ConcatFusion image width": (lambda: _CONCAT(_x(2, 3, 8), _x(2, 4, 8)), Err(ValueError, "image_tokens")),
    "ConcatFusion text_mask shape": (
        lambda: _CONCAT(_x(2, 3, 12), _x(2, 4, 8), text_mask=torch.ones(2, 5, dtype=torch.bool)),
        Err(ValueError, "text_mask"),
    ),
    "ConcatFusion B=0": (lambda: _CONCAT(_x(0, 3, 12), _x(0, 4, 8)), Doc("empty batch out", _empty((0, 16)))),
    # --- LoRA
    "LoRALinear(r=0)": (_lora_linear(r=0), Err(ValueError, "r")),
    "LoRALinear(r=True)": (_lora_linear(r=True), Err(ValueError, "r")),
    "LoRALinear(r=2.0)": (_lora_linear(r=2.0), Err(ValueError, "r")),
    "LoRALinear(alpha=0)": (_lora_linear(alpha=0), Err(ValueError, "alpha")),
    "LoRALinear(alpha=inf)": (_lora_linear(alpha=INF), Err(ValueError, "alpha")),
    "LoRALinear(alpha=nan)": (_lora_linear(alpha=NAN), Err(ValueError, "alpha")),
    "LoRALinear(dropout=1)": (_lora_linear(dropout=1), Err(ValueError, "dropout")),
    "LoRALinear(dropout=nan)": (_lora_linear(dropout=NAN), Err(ValueError, "dropout")),
    "LoRALinear.from_layer(Conv2d)": (
        lambda: LoRALinear.from_layer(nn.Conv2d(2, 2, 1), r=2, alpha=2),
        Err(TypeError, "LoRALinear", "expects a Linear"),
    ),
    "LoRALinear.from_layer(LoRA layer)": (
        lambda: LoRALinear.from_layer(_lora_linear()(), r=2, alpha=2),
        Err(ValueError, "layer", "already LoRA-wrapped"),
    ),
    "LoRALinear x wrong width": (
        lambda: _lora_linear()()(_x(2, 5)),
        Doc("torch's error, as for nn.Linear", lambda o: isinstance(o, RuntimeError)),
    ),
    "LoRAEmbedding id >= V": (
        lambda: LoRAEmbedding.from_layer(nn.Embedding(5, 4), r=2, alpha=2)(torch.tensor([5])),
        Doc("torch's IndexError, as for nn.Embedding", lambda o: isinstance(o, IndexError)),
    ),
    "LoRADropout(p=1)": (lambda: LoRADropout(1.0), Err(ValueError, "p")),
    "LoRADropout(p=nan)": (lambda: LoRADropout(NAN), Err(ValueError, "p")),
    "LoRADropout(p=0.99999)": (
        lambda: LoRADropout(0.99999).train()(torch.ones(1000)),
        Doc("finite, kept values 1/(1-p)", lambda o: bool(torch.isfinite(o).all())),
    ),
    "apply_lora no match": (lambda: apply_lora(Attention(8, heads=2), "nothing"), Err(ValueError, "targets")),
    "apply_lora targets=[]": (lambda: apply_lora(Attention(8, heads=2), []), Err(ValueError, "targets")),
    "apply_lora targets=[3]": (lambda: apply_lora(Attention(8, heads=2), [3]), Err(ValueError, "targets")),
    "apply_lora r=0": (lambda: apply_lora(Attention(8, heads=2), "q", r=0), Err(ValueError, "r")),
    "mark_only_peft_trainable positional extra": (
        lambda: mark_only_peft_trainable(Attention(8, heads=2), "q"),
        Err(TypeError, "positional", "takes 1 positional argument"),
    ),
    # --- adapters and soft prompts
    "BottleneckAdapter(dim=0)": (lambda: BottleneckAdapter(0, bottleneck=2), Err(ValueError, "dim")),
    "BottleneckAdapter(bottleneck=0)": (lambda: BottleneckAdapter(8, bottleneck=0), Err(ValueError, "bottleneck")),
    "BottleneckAdapter(dropout=1)": (
        lambda: BottleneckAdapter(8, bottleneck=2, dropout=1),
        Err(ValueError, "dropout"),
    ),
    "apply_adapters bottleneck=0": (
        lambda: apply_adapters(Attention(8, heads=2), "proj", bottleneck=0),
        Err(ValueError, "bottleneck"),
    ),
    "apply_adapters dim=0": (
        lambda: apply_adapters(Attention(8, heads=2), "proj", bottleneck=2, dim=0),
        Err(ValueError, "dim"),
    ),
    "apply_adapters no match": (
        lambda: apply_adapters(Attention(8, heads=2), "nothing", bottleneck=2),
        Err(ValueError, "targets"),
    ),
    "SoftPrompt(num_tokens=0)": (lambda: SoftPrompt(0, 8), Err(ValueError, "num_tokens")),
    "SoftPrompt(dim=0)": (lambda: SoftPrompt(2, 0), Err(ValueError, "dim")),
    "SoftPrompt(init='zeros')": (lambda: SoftPrompt(2, 8, init="zeros"), Err(ValueError, "init")),
    "SoftPrompt(init int tensor)": (
        lambda: SoftPrompt(2, 8, init=torch.zeros(2, 8, dtype=torch.long)),
        Err(TypeError, "init"),
    ),
    "SoftPrompt(init wrong shape)": (lambda: SoftPrompt(2, 8, init=torch.zeros(3, 8)), Err(ValueError, "init")),
    "SoftPrompt inputs_embeds int": (
        lambda: _PROMPT(_x(2, 4, 16, dtype=torch.long)),
        Err(TypeError, "inputs_embeds"),
    ),
    "SoftPrompt inputs_embeds width": (lambda: _PROMPT(_x(2, 4, 15)), Err(ValueError, "inputs_embeds")),
    "SoftPrompt attention_mask shape": (
        lambda: _PROMPT(_x(2, 4, 16), torch.ones(2, 5)),
        Err(ValueError, "attention_mask"),
    ),
    "SoftPrompt labels float": (
        lambda: _PROMPT(_x(2, 4, 16), None, torch.zeros(2, 4)),
        Err(TypeError, "labels"),
    ),
    # --- encoders
    "ConvNet(dim=0)": (lambda: ConvNet(dim=0), Err(ValueError, "dim")),
    "ConvNet(stages=0)": (lambda: ConvNet(stages=0), Err(ValueError, "stages")),
    "ConvNet(in_chans=True)": (lambda: ConvNet(in_chans=True), Err(ValueError, "in_chans")),
    "ConvNet(image_size=60)": (lambda: ConvNet(image_size=60, stages=3), Err(ValueError, "image_size")),
    "ConvNet(norm='layer')": (lambda: ConvNet(norm="layer"), Err(ValueError, "norm")),
    "ConvNet x channels": (lambda: _CONVNET(_x(2, 1, 16, 16)), Err(ValueError, "x")),
    "ConvNet x int": (lambda: _CONVNET(_x(2, 3, 16, 16, dtype=torch.uint8)), Err(TypeError, "x")),
    "ConvNet B=0": (lambda: _CONVNET(_x(0, 3, 16, 16)), Err(ValueError, "x", "empty batch")),
    "ImageConfig(size=0)": (lambda: ImageConfig(0), Err(ValueError, "size")),
    "ImageConfig(mean 2 values)": (lambda: ImageConfig(8, (0.5, 0.5)), Err(ValueError, "mean")),
    "ImageConfig(mean nan)": (lambda: ImageConfig(8, (0.5, NAN, 0.5)), Err(ValueError, "mean")),
    "ImageConfig(std=0)": (lambda: ImageConfig(8, std=(1.0, 0.0, 1.0)), Err(ValueError, "std")),
    "ImageConfig(std inf)": (lambda: ImageConfig(8, std=(1.0, INF, 1.0)), Err(ValueError, "std")),
    "ImageConfig(mean='rgb')": (lambda: ImageConfig(8, "rgb"), Err(TypeError, "mean")),
    "ImageEncoder(model='vit')": (lambda: ImageEncoder("vit"), Err(TypeError, "model")),
    "ImageEncoder(model=Linear)": (lambda: ImageEncoder(nn.Linear(2, 2)), Err(TypeError, "model")),
    "ImageEncoder(image_config=224)": (
        lambda: ImageEncoder(_CONVNET, image_config=224),
        Err(TypeError, "image_config"),
    ),
    "ImageEncoder.tiny(kind='x')": (lambda: ImageEncoder.tiny("x"), Err(ValueError, "kind")),
    "ImageEncoder.tiny(dim=0)": (lambda: ImageEncoder.tiny(dim=0), Err(ValueError, "dim")),
    "ImageEncoder.tiny(patch_size=3)": (
        lambda: ImageEncoder.tiny(image_size=24, patch_size=3),
        Err(ValueError, "patch_size"),
    ),
    "ImageEncoder.from_pretrained(name=3)": (lambda: ImageEncoder.from_pretrained(3), Err(TypeError, "name_or_path")),
    "ImageEncoder pixel_values list": (lambda: _IMAGE([[0.0]]), Err(TypeError, "pixel_values")),
    "ImageEncoder pixel_values 3-D": (lambda: _IMAGE(_x(3, 16, 16)), Err(ValueError, "pixel_values")),
    "ImageEncoder pixel_values channels": (lambda: _IMAGE(_x(2, 1, 16, 16)), Err(ValueError, "pixel_values")),
    "ImageEncoder pixel_values uint8": (
        lambda: _IMAGE(_x(2, 3, 16, 16, dtype=torch.uint8)),
        Err(TypeError, "pixel_values"),
    ),
    "ImageEncoder B=0": (lambda: _IMAGE(_x(0, 3, 16, 16)), Err(ValueError, "pixel_values", "empty batch")),
    "TextEncoder(model=Linear)": (lambda: TextEncoder(nn.Linear(2, 2)), Err(TypeError, "model")),
    "TextEncoder.tiny(kind='x')": (lambda: TextEncoder.tiny("x", tokenizer=_TOK), Err(ValueError, "kind")),
    "TextEncoder.tiny(dim=0)": (lambda: TextEncoder.tiny(tokenizer=_TOK, dim=0), Err(ValueError, "dim")),
    "TextEncoder.tiny(heads=3)": (lambda: TextEncoder.tiny(tokenizer=_TOK, dim=16, heads=3), Err(ValueError, "heads")),
    "TextEncoder.tiny(tokenizer=None)": (lambda: TextEncoder.tiny(tokenizer=None), Err(TypeError, "tokenizer")),
    "TextEncoder input_ids float": (lambda: _TEXT(_ids().float()), Err(TypeError, "input_ids")),
    "TextEncoder input_ids bool": (lambda: _TEXT(_ids().bool()), Err(TypeError, "input_ids")),
    "TextEncoder input_ids 1-D": (lambda: _TEXT(_ids()[0]), Err(ValueError, "input_ids")),
    "TextEncoder input_ids list": (lambda: _TEXT([[1, 2]]), Err(TypeError, "input_ids")),
    "TextEncoder id = vocab_size": (
        lambda: _TEXT(torch.tensor([[1, _V]])),
        Err(ValueError, "input_ids", rf"\[0, {_V}\).*got id {_V}"),
    ),
    "TextEncoder id = -1": (lambda: _TEXT(torch.tensor([[1, -1]])), Err(ValueError, "input_ids", "got id -1")),
    "TextEncoder B=0": (lambda: _TEXT(_ids(0, 5)), Err(ValueError, "input_ids", "empty batch")),
    "TextEncoder T=0": (lambda: _TEXT(_ids(2, 0)), Err(ValueError, "input_ids", "at least one token")),
    "TextEncoder attention_mask shape": (
        lambda: _TEXT(_ids(), torch.ones(2, 4, dtype=torch.long)),
        Err(ValueError, "attention_mask"),
    ),
    "TextEncoder attention_mask list": (lambda: _TEXT(_ids(), [[1] * 5] * 2), Err(TypeError, "attention_mask")),
    "TextEncoder.tokenize(max_length=0)": (lambda: _TEXT.tokenize("hi", max_length=0), Err(ValueError, "max_length")),
    # --- VQAModel
    "VQAModel(image_encoder='x')": (
        lambda: VQAModel("x", _TextStub(), _CONCAT, MLPHead(16, 3)),
        Err(TypeError, "image_encoder"),
    ),
    "VQAModel head.dim != out_dim": (
        lambda: VQAModel(_IMAGE, _TextStub(), _CONCAT, MLPHead(8, 3)),
        Err(ValueError, "head.dim"),
    ),
    "VQAModel pixel_values list": (lambda: _VQA([[0.0]], _ids(2, 3)), Err(TypeError, "pixel_values")),
    "VQAModel pixel_values 3-D": (lambda: _VQA(_x(3, 16, 16), _ids(2, 3)), Err(ValueError, "pixel_values")),
    "VQAModel input_ids float": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(2, 3).float()),
        Err(TypeError, "input_ids"),
    ),
    "VQAModel batch mismatch": (lambda: _VQA(_x(2, 3, 16, 16), _ids(3, 3)), Err(ValueError, "input_ids")),
    "VQAModel B=0": (lambda: _VQA(_x(0, 3, 16, 16), _ids(0, 3)), Err(ValueError, "pixel_values", "empty batch")),
    "VQAModel attention_mask shape": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(2, 3), torch.ones(2, 4)),
        Err(ValueError, "attention_mask"),
    ),
    "VQAModel image_index=-1": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(3, 3), image_index=torch.tensor([0, 1, -1])),
        Err(ValueError, "image_index", "got -1"),
    ),
    "VQAModel image_index=M": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(3, 3), image_index=torch.tensor([0, 1, 2])),
        Err(ValueError, "image_index", "got 2"),
    ),
    "VQAModel image_index float": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(3, 3), image_index=torch.tensor([0.0, 1.0, 1.0])),
        Err(TypeError, "image_index"),
    ),
    "VQAModel image_index shape": (
        lambda: _VQA(_x(2, 3, 16, 16), _ids(3, 3), image_index=torch.tensor([0, 1])),
        Err(ValueError, "image_index"),
    ),
    # --- metrics.vqa
    "vqa_accuracy predictions=str": (lambda: vqa_accuracy("yes", [["yes"]]), Err(TypeError, "predictions")),
    "vqa_accuracy length mismatch": (
        lambda: vqa_accuracy(["a", "b"], [["a"] * 10]),
        Err(ValueError, "predictions"),
    ),
    "vqa_accuracy empty": (lambda: vqa_accuracy([], []), Err(ValueError, "predictions")),
    "vqa_accuracy normalize='x'": (
        lambda: vqa_accuracy(["a"], [["a"]], normalize="x"),
        Err(ValueError, "normalize"),
    ),
    "vqa_accuracy answers[0] empty": (lambda: vqa_accuracy(["a"], [[]]), Err(ValueError, r"answers\[0\]")),
    "vqa_accuracy answers[0] str": (lambda: vqa_accuracy(["a"], ["a"]), Err(ValueError, r"answers\[0\]")),
    "vqa_accuracy predictions[0]=3": (lambda: vqa_accuracy([3], [["3"]]), Err(TypeError, r"predictions\[0\]")),
    "vqa_accuracy per_question=True": (
        lambda: vqa_accuracy(["a"], [["a"]], per_question=True),
        Err(TypeError, "per_question"),
    ),
    "vqa_accuracy_per_question empty": (lambda: vqa_accuracy_per_question([], []), Err(ValueError, "predictions")),
    "vqa_accuracy_by_type types length": (
        lambda: vqa_accuracy_by_type(["a"], [["a"]], ["t", "u"]),
        Err(ValueError, "types"),
    ),
    "vqa_question_accuracy normalize='x'": (
        lambda: vqa_question_accuracy("a", ["a"], normalize="x"),
        Err(ValueError, "normalize"),
    ),
    "normalize_vqa_answer(3)": (lambda: normalize_vqa_answer(3), Err(TypeError, "text")),
    "vqa_accuracy returns a float": (
        lambda: vqa_accuracy(["a"], [["a"] * 10]),
        Doc("float 1.0", lambda o: type(o) is float and o == 1.0),
    ),
    # --- package-root utilities
    "count_parameters('x')": (lambda: count_parameters("x"), Err(TypeError, "model")),
    "count_parameters(no params)": (
        lambda: count_parameters(nn.ReLU()),
        Doc("(0, 0, 0.0)", lambda o: tuple(o) == (0, 0, 0.0)),
    ),
}

_TORCH_ERRORS = {"LoRALinear x wrong width", "LoRAEmbedding id >= V"}  # torch's own error, as for the base layer


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str) -> None:
    fn, expect = CASES[name]
    if isinstance(expect, Err):
        with pytest.raises(expect.exc) as info:
            fn()
        message = str(info.value)
        assert re.search(rf"(?<![\w.]){expect.arg}(?!\w)", message), f"{name}: {message!r} does not name {expect.arg}"
        if expect.extra is not None:
            assert re.search(expect.extra, message), f"{name}: {message!r} !~ {expect.extra!r}"
        return
    if name in _TORCH_ERRORS:
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - the documented result is torch's own exception
            out = err
    else:
        with torch.no_grad():
            out = fn()
    assert expect.check(out), f"{name}: expected {expect.what}, got {out!r}"[:500]


def test_counts() -> None:
    """The figures of docs/design-notes.md: cases, clear errors (ValueError / TypeError naming the argument),
    documented results."""
    errors = sum(isinstance(e, Err) for _, e in CASES.values())
    docs = sum(isinstance(e, Doc) for _, e in CASES.values())
    assert errors + docs == len(CASES)
    print(f"bad-input suite (blocks): {len(CASES)} cases, {errors} clear errors, {docs} documented results")
