"""TextEncoder: one interface over HF text encoders (BERT, RoBERTa, MiniLM, CLIP text) and their tokenizers.

The wrapper returns the model's last hidden state as tokens, with the attention mask as the token mask, so
`tokens[:, 0]` is the [CLS] / <s> summary token of bidirectional encoders (Devlin et al. 2019, "BERT"; Liu et
al. 2019, "RoBERTa"). A causal text tower has no such token (CLIP's text transformer, Radford et al. 2021, reads
its summary at the end-of-text token), so for it the wrapper prepends that pooled token as the summary.
`tiny()` builds random-init BERT / RoBERTa / CLIP-text models around any tokenizer, for offline recipes and tests.
The module also holds the HF loading helpers both wrappers use (name routing, tower loading, freezing).

Shapes: B batch, T input tokens, N output tokens (T, or 1 + T with a prepended summary), D width.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vlblocks._checks import check_choice, check_dropout, check_positive_int, check_tensor
from vlblocks.encoders.freezing import FreezableEncoder
from vlblocks.encoders.loading import accepts, hf_unused_parameters, is_hf_model, load_hf_tower, resolve_local
from vlblocks.encoders.output import EncoderOutput

__all__ = ["TextEncoder"]

_TINY_KINDS = ("bert", "roberta", "clip")
_EOS_SUMMARY = ("clip_text_model",)  # causal towers whose summary is the pooled end-of-text token


class TextEncoder(FreezableEncoder):
    """Wrap an HF text model (and its tokenizer); forward gives an `EncoderOutput`.

    Args:
        model: a transformers text `PreTrainedModel` returning `last_hidden_state` (and, for CLIP text,
            `pooler_output`).
        tokenizer: the matching tokenizer (kept as a plain attribute; not part of the state dict).

    Attributes:
        dim: token width D. num_prefix_tokens: 1 where a summary token is prepended (CLIP text), else 0.
        tokenizer, model.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        if not is_hf_model(model):
            raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
        if not accepts(model.forward, "input_ids"):
            raise TypeError(f"model must be an HF text model taking input_ids, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.dim = int(model.config.hidden_size)
        self._eos_summary = getattr(model.config, "model_type", "") in _EOS_SUMMARY
        self.num_prefix_tokens = int(self._eos_summary)
        self._frozen = False
        self._unused = hf_unused_parameters(model)
        self._freeze_unused()

    @property
    def out_dim(self) -> int:
        """Token width D (= `dim`)."""
        return self.dim

    @property
    def vocab_size(self) -> int:
        """Number of rows of the input embedding: valid token ids are in [0, vocab_size)."""
        return int(self.model.get_input_embeddings().num_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """input_ids (B, T) int, attention_mask (B, T) 1 / True on real tokens (None: all real).

        Returns:
            EncoderOutput(tokens (B, N, D), mask (B, N) bool or None, cls (B, D) = tokens[:, 0]).
        """
        _check_ids(input_ids, attention_mask, self.vocab_size)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        tokens = out.last_hidden_state  # (B, T, D)
        mask = None if attention_mask is None else attention_mask.bool()
        if self._eos_summary:
            tokens = torch.cat([out.pooler_output[:, None], tokens], dim=1)  # (B, 1 + T, D)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # (B, 1 + T)
        return EncoderOutput(tokens=tokens, mask=mask, cls=tokens[:, 0])

    def tokenize(self, texts: str | list[str], *, max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenize a batch with padding (and truncation to max_length): {"input_ids", "attention_mask"} (B, T)."""
        if self.tokenizer is None:
            raise ValueError("tokenizer is None: build the TextEncoder with a tokenizer to call tokenize()")
        if max_length is not None:
            check_positive_int("max_length", max_length)
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.tokenizer(
            texts, padding=True, truncation=max_length is not None, max_length=max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, model_type={self.model.config.model_type}, prefix={self.num_prefix_tokens}"

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, pretrained: bool = True, **kwargs: Any
    ) -> TextEncoder:
        """Load a text encoder and its tokenizer from a local folder or an HF hub id (no remote code).

        A composite checkpoint (CLIPConfig, SiglipConfig ...) loads its text tower (CLIPTextModel ...).
        `pretrained=False` builds the same architecture with random weights. `**kwargs` go to the model's
        `from_pretrained` (e.g. attn_implementation="eager").

        Raises:
            FileNotFoundError: a path that does not exist or has no config.json.
            ValueError: trust_remote_code asked for, or a checkpoint missing weights of the tower.
        """
        from transformers import AutoTokenizer

        name, _ = resolve_local(name_or_path, kwargs)
        model = load_hf_tower(name, "text", pretrained=pretrained, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        return cls(model, tokenizer)

    @classmethod
    def tiny(
        cls,
        kind: str = "bert",
        *,
        tokenizer: Any,
        dim: int = 64,
        depth: int = 2,
        heads: int = 2,
        max_positions: int = 64,
        dropout: float | None = None,
    ) -> TextEncoder:
        """A small random-init text encoder whose vocabulary and padding id come from `tokenizer`.

        kind: "bert" (BertModel), "roberta" (RobertaModel; position ids start after its padding id, so it gets
        max_positions + 2 position embeddings, or more for a pad id above 1) or "clip" (CLIPTextModel: causal,
        its end-of-text id is the tokenizer's sep / eos token). No pooler is built.
        dropout: the hidden and attention-probability dropout; None keeps the transformers config's default
        (0.1 for BERT / RoBERTa, 0.0 for CLIP, whose text tower has only an attention dropout).
        """
        check_choice("kind", kind, _TINY_KINDS)
        for name, value in (
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("max_positions", max_positions),
        ):
            check_positive_int(name, value)
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads={heads}, got {dim}")
        if dropout is not None:
            check_dropout("dropout", dropout)
        if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "pad_token_id"):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("tokenizer must define a pad token (tokenizer.pad_token_id is None)")
        common = dict(
            vocab_size=len(tokenizer),
            hidden_size=dim,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * dim,
            pad_token_id=pad,
        )
        if dropout is not None:  # each family names its dropout probabilities differently
            names = ("attention_dropout",) if kind == "clip" else _BERT_DROPOUTS  # CLIP's text tower has no other
            common.update(dict.fromkeys(names, dropout))
        return cls(_tiny_model(kind, common, tokenizer, max_positions), tokenizer)


_BERT_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def _tiny_model(kind: str, common: dict, tokenizer: Any, max_positions: int) -> nn.Module:
    import transformers as tf

    if kind == "bert":
        return tf.BertModel(
            tf.BertConfig(max_position_embeddings=max_positions, **common), add_pooling_layer=False
        )
    if kind == "roberta":
        # RoBERTa numbers real tokens padding_idx + 1, padding_idx + 2, ...: the table needs pad + 1 extra rows
        positions = max(max_positions + 2, max_positions + common["pad_token_id"] + 1)
        config = tf.RobertaConfig(max_position_embeddings=positions, type_vocab_size=1, **common)
        return tf.RobertaModel(config, add_pooling_layer=False)
    eos = next((t for t in (tokenizer.sep_token_id, tokenizer.eos_token_id) if t is not None), None)
    if eos is None:
        raise ValueError(
            "kind='clip' needs a tokenizer with a sep or eos token (its pooled end-of-text token)"
        )
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    config = tf.CLIPTextConfig(
        max_position_embeddings=max_positions, eos_token_id=eos, bos_token_id=bos, **common
    )
    return tf.CLIPTextModel(config)


def _check_ids(input_ids: object, attention_mask: object, vocab_size: int) -> None:
    """Types, shapes, a non-empty batch, and ids inside the vocabulary (an embedding lookup would fail obscurely)."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have rank 2 (B, T), got shape {tuple(input_ids.shape)}")
    check_tensor("input_ids", input_ids, dtype="int")  # integer, non-empty batch
    if input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must hold at least one token per row, got shape {tuple(input_ids.shape)}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) (the vocabulary), got id {bad}")
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor or None, got {type(attention_mask).__name__}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )


# ----------------------------------------------------------------------------- HF loading helpers (also used by image.py)
