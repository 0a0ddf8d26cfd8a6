"""The generation loop: prefill, then a fixed number of decode steps with a finished mask; greedy / sampling here,
beam search in `beam.py`.

The loop never asks the device anything: positions and cache slots are tensors incremented in place, finished rows
keep running (they emit the pad token), and the penalties read a fixed-size token buffer. An optional early stop
(`check_every=k`) copies "every row finished" to the host without blocking every k steps and reads the copy from
k steps earlier once its event has completed, so the device never waits for the host. One decode step
(`decode_step` + `sample_next_token`) compiles with `torch.compile(fullgraph=True)`; its random draws come in as a
tensor (`noise`) because compiled code cannot trace a `torch.Generator`.

Shapes: B rows, P prompt length (left padded), Np prefix (image) tokens, T new tokens, L = Np + P + T cache slots,
V vocabulary, H heads, Ni image tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlblocks._checks import (
    check_int,
    check_nonneg_int,
    check_positive_int,
    check_positive_number,
    check_tensor,
)
from vlblocks.generation.cache import StaticCache
from vlblocks.generation.fast import FastStep
from vlblocks.generation.graph import check_graphable, kept_step
from vlblocks.generation.processors import apply_repetition_penalty, ban_repeated_ngrams
from vlblocks.generation.recorder import CrossAttentionRecorder, check_layers
from vlblocks.generation.sampling import _check as check_sampling_args
from vlblocks.generation.sampling import noise_width, sample_next_token

__all__ = ["GenerationOutput", "Prompt", "decode_step", "generate", "prefill", "prepare"]


@dataclass
class GenerationOutput:
    """sequences (B, P + T): the prompt as given, then the new tokens (pad after a row's eos);
    scores (B,): greedy / sampling: sum of the log-probabilities (after penalties, before temperature and
    filters) of a row's new tokens up to its eos, only with `output_scores=True` (else None, as HF's `generate`
    computes no scores unless asked); beam search: HF's sequence score (sum of log-probs / length **
    length_penalty), always (the search computes it anyway); cross_attentions: layer -> (B, T, H, Ni), the
    cross-attention of the query that produced each new token (empty unless `return_cross_attentions` was given)."""

    sequences: torch.Tensor
    scores: torch.Tensor | None
    cross_attentions: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Prompt:
    """A checked, embedded-ready prompt: ids / mask (B, P), prefix embeddings (B, Np, D) or None, cache length L;
    `unpadded`: no attention mask was given (every token is real)."""

    ids: torch.Tensor
    mask: torch.Tensor
    prefix: torch.Tensor | None
    image_embeds: torch.Tensor | None
    max_len: int
    unpadded: bool = False

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[1]


def prepare(
    decoder: Any,
    image_embeds: torch.Tensor | None,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    max_new_tokens: int,
) -> Prompt:
    """Check the inputs and size the cache; a missing prompt is the BOS token."""
    cfg = decoder.config
    if input_ids is None:
        if image_embeds is None:
            raise ValueError("generate needs image_embeds, input_ids or both")
        if cfg.bos_token_id is None:
            raise ValueError("input_ids is required when the decoder config has no bos_token_id")
        input_ids = torch.full((image_embeds.shape[0], 1), cfg.bos_token_id, device=image_embeds.device)
    check_tensor("input_ids", input_ids, ndim=2, dtype="int", shape="(B, P)")
    b, p = input_ids.shape
    decoder.check_image_embeds(image_embeds, b)
    if attention_mask is None:
        mask = torch.ones(b, p, dtype=torch.bool, device=input_ids.device)
    else:
        check_tensor("attention_mask", attention_mask, ndim=2, shape="(B, P)")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
    prefix = decoder.input_prefix(image_embeds, b)  # visual prefix and / or soft prompt (B, Np, D), or None
    total = (0 if prefix is None else prefix.shape[1]) + p + max_new_tokens
    if total > cfg.n_positions:
        raise ValueError(
            f"prompt ({p} tokens{'' if prefix is None else f' + {prefix.shape[1]} image tokens'}) + max_new_tokens "
            f"({max_new_tokens}) must fit the position budget n_positions={cfg.n_positions}, got {total}"
        )
    return Prompt(ids=input_ids, mask=mask, prefix=prefix, image_embeds=image_embeds, max_len=total,
                  unpadded=attention_mask is None)


def prefill(
    decoder: Any, prompt: Prompt, *, head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step: FastStep | None = None,
) -> tuple[StaticCache, torch.Tensor, torch.Tensor]:
    """Run the prompt (and prefix) through the decoder into a new cache.

    `head` maps the last hidden state (B, D) to the result (default: `decoder.lm_head`, as float32 logits;
    `generate` passes the fast step's, which may return the greedy tokens (B,) instead). `step`: a `FastStep`
    that runs a one-token prompt without prefix or padding (the common BOS prompt) as a decode step at slot 0 (the
    same computation, without the modules' per-call overhead); it then gives the result instead of `head`.
    Returns (cache, logits of the last prompt token (B, V) float32 (or `head`'s result), its position (B, 1)).
    """
    cfg, tr = decoder.config, decoder.transformer
    b, p = prompt.ids.shape
    x = tr.wte(prompt.ids)  # (B, P, D)
    mask = prompt.mask
    if prompt.prefix is not None:
        x = torch.cat([prompt.prefix.to(x.dtype), x], dim=1)  # (B, Np + P, D)
        mask = torch.cat([mask.new_ones(b, prompt.prefix_len), mask], dim=1)  # (B, Np + P)
    n = x.shape[1]
    pos = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, Np + P)
    cache = StaticCache.allocate(
        batch=b, depth=cfg.n_layer, heads=cfg.n_head, dim_head=cfg.n_embd // cfg.n_head, max_len=prompt.max_len,
        cross_kv=_contiguous(decoder.cross_kv(prompt.image_embeds)), device=x.device, dtype=x.dtype,
    )
    cache.key_mask[:, :n] = mask
    if step is not None and n == 1 and prompt.unpadded:
        return cache, step(decoder, cache, prompt.ids, torch.zeros(1, dtype=torch.long, device=x.device), pos), pos
    slots = torch.arange(n, device=x.device)
    h = decoder.run_blocks(
        x + tr.wpe(pos), mask=cache.key_mask, cross_kv=cache.cross_kv, caches=cache.layers, positions=slots
    )
    out = head(h[:, -1]) if head is not None else decoder.lm_head(h[:, -1]).float()
    return cache, out, pos[:, -1:]


def _contiguous(
    cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None],
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Image keys / values in contiguous memory: every decode step reads them (SDPA is ~1.5x faster so on CPU)."""
    return [None if kv is None else (kv[0].contiguous(), kv[1].contiguous()) for kv in cross_kv]


def decode_step(
    decoder: Any, cache: StaticCache, tokens: torch.Tensor, slot: torch.Tensor, position: torch.Tensor
) -> torch.Tensor:
    """One token per row: tokens (B, 1) at cache slot `slot` (1,) and positions (B, 1) -> next logits (B, V) float32."""
    tr = decoder.transformer
    x = tr.wte(tokens) + tr.wpe(position)  # (B, 1, D)
    h = decoder.run_blocks(x, mask=cache.key_mask, cross_kv=cache.cross_kv, caches=cache.layers, positions=slot)
    return decoder.lm_head(h[:, -1]).float()


def generate(
    decoder: Any,
    image_embeds: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    temperature: float | torch.Tensor = 0.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    repetition_penalty: float | torch.Tensor = 1.0,
    no_repeat_ngram_size: int = 0,
    generator: torch.Generator | None = None,
    return_cross_attentions: Sequence[int] | None = None,
    check_every: int = 0,
    compile_step: bool = False,
    cuda_graph: bool = False,
    output_scores: bool = False,
) -> GenerationOutput:
    """Decode up to `max_new_tokens` tokens per row (greedy, sampling or beam search).

    Args:
        decoder: a `GPT2Decoder`.
        image_embeds: (B, Ni, Di) image tokens (cross-attention keys / values, or the visual prefix).
        input_ids: (B, P) prompt, left padded (default: the BOS token); attention_mask (B, P) marks real tokens.
        max_new_tokens: T, the number of decode steps.
        eos_token_id / pad_token_id: end token (default: the config's) and the filler after it (default: eos).
        temperature, top_k, top_p, min_p: the sampler's arguments (`sample_next_token`), numbers or per-row
            tensors (B,); temperature 0 (the default) is greedy.
        num_beams: > 1 runs beam search (HF's algorithm: `length_penalty`, `early_stopping` True / False /
            "never"); the sampler arguments are then unused.
        repetition_penalty, no_repeat_ngram_size: HF's processors, over prompt + generated tokens.
        generator: random stream of the sampler.
        return_cross_attentions: layer indices whose cross-attention to return; only those layers leave the fused
            kernel.
        check_every: k > 0 stops once every row has finished, seen through a non-blocking copy every k steps.
        compile_step: run the decode step through `torch.compile(fullgraph=True)` (default mode; with
            `cuda_graph=True` the compiled step is what is captured).
        cuda_graph: on a GPU, capture the decode step in a CUDA graph once per decoder and shape and replay it
            every step (`vlblocks.generation.graph`; needs an eval-mode decoder without hooks and no
            `return_cross_attentions`).
        output_scores: greedy / sampling: also return each row's summed log-probabilities (a log-softmax over the
            vocabulary every step; off by default, as HF's `output_scores`). Beam search always returns them.

    Returns:
        GenerationOutput(sequences (B, P + T), scores (B,) or None, cross_attentions {layer: (B, T, H, Ni)}).

    Raises:
        ValueError: a sampler argument out of range, num_beams < 1, a prompt longer than the position budget,
            image embeddings of the wrong width, `cuda_graph=True` off a GPU or with hooks.
    """
    eos, pad = _check_loop_args(decoder, max_new_tokens, num_beams, no_repeat_ngram_size, check_every,
                                repetition_penalty, eos_token_id, pad_token_id)
    layers = check_layers(decoder, return_cross_attentions)
    with torch.no_grad(), CrossAttentionRecorder(decoder, layers) as recorder:
        prompt = prepare(decoder, image_embeds, input_ids, attention_mask, max_new_tokens)
        check_sampling_args(torch.zeros(prompt.ids.shape[0], 1), temperature, top_k, top_p, min_p)
        # plain greedy (argmax only: no scores, penalties or sampling): the step may pick the tokens itself
        only_argmax = num_beams == 1 and not output_scores and _is_zero(temperature) and _no_penalty(
            repetition_penalty, no_repeat_ngram_size)
        cache, logits, position, step_fn, picks_tokens = _start(
            decoder, prompt, num_beams=num_beams, only_argmax=only_argmax, compile_step=compile_step,
            cuda_graph=cuda_graph, recorded=bool(layers))
        common = dict(max_new_tokens=max_new_tokens, eos=eos, pad=pad, repetition_penalty=repetition_penalty,
                      ngram=no_repeat_ngram_size, recorder=recorder, step_fn=step_fn, check_every=check_every)
        if num_beams > 1:
            from vlblocks.generation.beam import beam_search

            return beam_search(decoder, prompt, cache, logits, position, num_beams=num_beams,
                               length_penalty=length_penalty, early_stopping=early_stopping, **common)
        sampler = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, generator=generator)
        return _sample_loop(decoder, prompt, cache, logits, position, sampler=sampler, output_scores=output_scores,
                            picks_tokens=picks_tokens, **common)


def _check_loop_args(
    decoder: Any, max_new_tokens: int, num_beams: int, ngram: int, check_every: int, repetition_penalty: Any,
    eos_token_id: int | None, pad_token_id: int | None,
) -> tuple[int | None, int]:
    """The loop's arguments checked -> (eos: the given one or the config's, pad: the given one, else eos, else 0)."""
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("num_beams", num_beams)
    check_nonneg_int("no_repeat_ngram_size", ngram)
    check_nonneg_int("check_every", check_every)
    if not isinstance(repetition_penalty, torch.Tensor):
        check_positive_number("repetition_penalty", repetition_penalty)
    eos = decoder.config.eos_token_id if eos_token_id is None else eos_token_id
    if eos is not None:
        check_int("eos_token_id", eos, low=0, high=decoder.config.vocab_size - 1)
    return eos, pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)


def _start(
    decoder: Any, prompt: Prompt, *, num_beams: int, only_argmax: bool, compile_step: bool, cuda_graph: bool,
    recorded: bool,
) -> tuple[StaticCache, torch.Tensor, torch.Tensor, Any, bool]:
    """Choose the decode step and prefill: -> (cache of B * num_beams rows, the prefill's logits (B, V) or greedy
    tokens (B,), positions (B, 1), the step function, whether the step picks the tokens itself)."""
    if cuda_graph:
        check_graphable(decoder, decoder.lm_head.weight.device, hooked=not FastStep.supports(decoder),
                        recorded=recorded)
    fast = None if compile_step else FastStep.build(decoder, prompt.ids.shape[0] * num_beams, greedy=only_argmax)
    step_fn = _compiled_step() if compile_step else (fast or decode_step)
    picks_tokens = fast is not None and fast.picks_tokens
    cache, logits, position = prefill(decoder, prompt, head=None if fast is None else fast.head, step=fast)
    if cuda_graph:  # the kept cache of this shape, loaded with the prefill; the step replays on it
        kind = "compiled" if compile_step else ("tokens" if picks_tokens else "logits")
        step_fn, cache = kept_step(decoder, cache, repeat=num_beams, kind=kind, step_fn=step_fn)
    elif num_beams > 1:
        cache.repeat_rows(num_beams)  # the beams of each prompt
    return cache, logits, position, step_fn, picks_tokens


def _sample_loop(
    decoder: Any, prompt: Prompt, cache: StaticCache, logits: torch.Tensor, position: torch.Tensor, *,
    sampler: dict[str, Any], max_new_tokens: int, eos: int | None, pad: int, repetition_penalty: Any, ngram: int,
    recorder: CrossAttentionRecorder, step_fn: Any, check_every: int, output_scores: bool, picks_tokens: bool,
) -> GenerationOutput:
    """Greedy / sampling decode. `picks_tokens`: `step_fn` (and the prefill's `logits`) are the greedy tokens."""
    b, p = prompt.ids.shape
    device = logits.device
    seq = torch.full((b, p + max_new_tokens), pad, dtype=torch.long, device=device)  # (B, P + T)
    seq[:, :p] = prompt.ids
    seq_mask = torch.zeros_like(seq, dtype=torch.bool)
    seq_mask[:, :p] = prompt.mask
    length = torch.full((), p, dtype=torch.long, device=device)
    slot = torch.full((1,), prompt.prefix_len + p, dtype=torch.long, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    scores = torch.zeros(b, device=device) if output_scores else None
    greedy = _is_zero(sampler["temperature"])
    top_k = sampler["top_k"]
    vocab = decoder.config.vocab_size
    fast_k = isinstance(top_k, int) and not isinstance(top_k, bool) and 0 < top_k < vocab
    width = int(top_k) if fast_k else noise_width(vocab)
    penalties = not _no_penalty(repetition_penalty, ngram)  # only they read seq_mask and length
    stopper = _EarlyStop(check_every, device)
    attentions = []
    kw = {k: v for k, v in sampler.items() if k != "generator"}
    for step in range(max_new_tokens):
        if picks_tokens:
            token = logits  # (B,) the step's argmax
        else:
            logits = process_logits(logits, seq, seq_mask, length, repetition_penalty, ngram)
            noise = None
            if not greedy:
                noise = torch.empty(b, width, device=device).exponential_(generator=sampler["generator"])
            token = sample_next_token(logits, noise=noise, **kw)  # (B,)
        if scores is not None:
            logp = logits.log_softmax(dim=-1).gather(1, token[:, None])[:, 0]
            scores = scores + logp.masked_fill(finished, 0.0)
        token = token.masked_fill(finished, pad)
        seq[:, p + step] = token
        if penalties:
            seq_mask[:, p + step] = True
        attentions.append(recorder.last_query())
        if eos is not None:
            finished = finished | (token == eos)
        if step + 1 == max_new_tokens or stopper.should_stop(step, finished):
            break
        position = position + 1
        logits = step_fn(decoder, cache, token[:, None], slot, position)
        slot += 1
        if penalties:
            length += 1
    return GenerationOutput(seq, scores, recorder.stack(attentions, max_new_tokens))


def _is_zero(temperature: Any) -> bool:
    return not isinstance(temperature, torch.Tensor) and float(temperature) == 0.0


def _no_penalty(repetition_penalty: Any, ngram: int) -> bool:
    """Whether neither penalty changes the logits."""
    return ngram == 0 and not isinstance(repetition_penalty, torch.Tensor) and float(repetition_penalty) == 1.0


def process_logits(
    logits: torch.Tensor, seq: torch.Tensor, seq_mask: torch.Tensor, length: torch.Tensor, repetition_penalty: Any,
    ngram: int,
) -> torch.Tensor:
    """Apply the repetition penalty and the n-gram ban over the filled part of `seq` (B, P + T)."""
    if isinstance(repetition_penalty, torch.Tensor) or float(repetition_penalty) != 1.0:
        logits = apply_repetition_penalty(logits, seq, repetition_penalty, mask=seq_mask)
    if ngram > 0:
        logits = ban_repeated_ngrams(logits, seq, ngram, length=length, mask=seq_mask)
    return logits


class _EarlyStop:
    """Every k steps, copy "all finished" to the host without blocking; stop when a completed copy says so."""

    def __init__(self, every: int, device: torch.device) -> None:
        self.every, self.cuda = every, device.type == "cuda"
        self.flag = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda) if every else None
        self.event: Any = None

    def should_stop(self, step: int, finished: torch.Tensor) -> bool:
        if not self.every or (step + 1) % self.every:
            return False
        done = self.event is not None and (not self.cuda or self.event.query()) and bool(self.flag)  # host memory
        self.flag.copy_(finished.all(), non_blocking=True)
        if self.cuda:
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.event = True
        return done


_COMPILED: dict[str, Any] = {}


def _compiled_step() -> Any:
    """`decode_step` under torch.compile (one compiled function per process)."""
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(decode_step, fullgraph=True, dynamic=False)
    return _COMPILED["step"]
