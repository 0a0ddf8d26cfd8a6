"""Beam search with fixed shapes, step for step HF's vectorised beam search (transformers >= 4.50).

Per image: `num_beams` running beams and `num_beams` finished slots. Each step scores every (beam, token)
continuation (log-softmax + penalties + the beam's running score), keeps the top 2 * num_beams, moves those that end
(eos, or the last step) into the finished slots with their length-penalised score `sum log p / T ** length_penalty`,
and continues with the best num_beams that did not end. HF's early-stopping rule (`early_stopping` True / False /
"never") decides when a batch item can no longer improve; here that only freezes its finished slots, because the loop
always runs its fixed number of steps (or stops through the non-blocking check). Beam reordering is an in-place
gather of the cache rows; the image keys / values are shared by an image's beams and never copied.

Shapes: B images, K beams, C = 2K candidates, S = P + T sequence buffer, V vocabulary, H heads, Ni image tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from vlblocks.generation.cache import StaticCache
from vlblocks.generation.recorder import pad_steps
from vlblocks.generation.search import GenerationOutput, Prompt, _EarlyStop, process_logits

__all__ = ["beam_search"]

_NEG = -1.0e9  # HF's "impossible" score


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t (B, K, ...) rows picked by index (B, C) -> (B, C, ...)."""
    shape = index.shape + (1,) * (t.dim() - 2)
    return t.gather(1, index.reshape(shape).expand(*index.shape, *t.shape[2:]))


def beam_search(
    decoder: Any, prompt: Prompt, cache: StaticCache, logits: torch.Tensor, position: torch.Tensor, *,
    num_beams: int, length_penalty: float, early_stopping: bool | str, max_new_tokens: int, eos: int | None,
    pad: int, repetition_penalty: Any, ngram: int, recorder: Any, step_fn: Any, check_every: int,
) -> GenerationOutput:
    """Beam search after `prefill`: logits of B rows, the cache already repeated to B * K rows; see `generate`."""
    b, p = prompt.ids.shape
    k, device = num_beams, logits.device
    vocab = logits.shape[-1]
    total = p + max_new_tokens
    logits = logits.repeat_interleave(k, dim=0)  # (B*K, V)
    position = position.repeat_interleave(k, dim=0)  # (B*K, 1)
    first_attn = {layer: a.repeat_interleave(k, dim=0) for layer, a in recorder.last_query().items()}

    running = torch.full((b, k, total), pad, dtype=torch.long, device=device)  # (B, K, S)
    running[:, :, :p] = prompt.ids[:, None]
    run_mask = torch.zeros_like(running, dtype=torch.bool)
    run_mask[:, :, :p] = prompt.mask[:, None]
    run_scores = torch.zeros(b, k, device=device)
    run_scores[:, 1:] = _NEG
    done_seq, done_scores = running.clone(), torch.full((b, k), _NEG, device=device)
    done = torch.zeros(b, k, dtype=torch.bool, device=device)
    improvable = torch.ones(b, 1, dtype=torch.bool, device=device)
    top_k_mask = torch.arange(2 * k, device=device) < k  # (C,)
    offsets = torch.arange(b, device=device)[:, None] * k  # (B, 1)
    length = torch.full((), p, dtype=torch.long, device=device)
    slot = torch.full((1,), prompt.prefix_len + p, dtype=torch.long, device=device)
    run_attn = {layer: [] for layer in recorder.layers}  # per step (B, K, H, Ni), reordered with the beams
    done_attn = {layer: None for layer in recorder.layers}
    stopper = _EarlyStop(check_every, device)

    for step in range(max_new_tokens):
        cur = p + step
        attn = first_attn if step == 0 else recorder.last_query(b * k)
        log_probs = logits.log_softmax(dim=-1)
        flat_seq, flat_mask = running.flatten(0, 1), run_mask.flatten(0, 1)  # (B*K, S)
        log_probs = process_logits(log_probs, flat_seq, flat_mask, length, repetition_penalty, ngram)
        log_probs = log_probs.view(b, k, vocab) + run_scores[:, :, None]
        cand_scores, cand = log_probs.view(b, k * vocab).topk(2 * k, dim=-1)  # (B, C)
        beam, token = cand // vocab, cand % vocab
        cand_seq = _gather(running, beam)  # (B, C, S)
        cand_seq[:, :, cur] = token
        cand_mask = _gather(run_mask, beam)
        cand_mask[:, :, cur] = True
        cand_attn = {layer: _gather(_history(run_attn[layer], attn[layer], b, k), beam) for layer in run_attn}
        ends = torch.zeros_like(token, dtype=torch.bool) if eos is None else token == eos
        if step + 1 == max_new_tokens:
            ends = torch.ones_like(ends)

        # continue with the best K candidates that did not end
        keep = (cand_scores + ends.float() * _NEG).topk(k, dim=-1).indices  # (B, K)
        running, run_mask = _gather(cand_seq, keep), _gather(cand_mask, keep)
        run_scores = (cand_scores + ends.float() * _NEG).gather(1, keep)
        src_beam = _gather(beam, keep)  # (B, K)
        run_attn = {layer: list(_gather(h, keep).unbind(2)) for layer, h in cand_attn.items()}

        # move candidates that ended among the top K into the finished slots
        just_done = ends & top_k_mask[None]
        scored = cand_scores / float(step + 1) ** length_penalty
        if early_stopping is True:
            scored = scored + (done.all(dim=-1, keepdim=True)).float() * _NEG
        scored = scored + (~improvable).float() * _NEG + (~just_done).float() * _NEG
        merged = torch.cat([done_scores, scored], dim=1)  # (B, K + C)
        best = merged.topk(k, dim=-1).indices  # (B, K)
        done_seq = _gather(torch.cat([done_seq, cand_seq], dim=1), best)
        done_scores = merged.gather(1, best)
        done = _gather(torch.cat([done, just_done], dim=1), best)
        done_attn = {layer: _finished_attention(done_attn[layer], h, best) for layer, h in cand_attn.items()}

        improvable = _improvable(improvable, run_scores, done_scores, done, step + 1, max_new_tokens,
                                 early_stopping, length_penalty)
        if step + 1 == max_new_tokens or stopper.should_stop(step, _finished(improvable, done, early_stopping)):
            break
        cache.reorder((src_beam + offsets).flatten())
        logits = step_fn(decoder, cache, running[:, :, cur].reshape(b * k, 1), slot, position + step + 1)
        slot += 1
        length += 1

    attentions = {layer: pad_steps(h[:, 0], max_new_tokens) for layer, h in done_attn.items()}  # (B, T, H, Ni)
    return GenerationOutput(done_seq[:, 0], done_scores[:, 0], attentions)


def _finished_attention(prev: torch.Tensor | None, cand: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """The finished slots' attentions after this step: prev (B, K, t - 1, H, Ni) or None, with one more (empty)
    step, then the candidates' (B, C, t, H, Ni), picked by best (B, K) -> (B, K, t, H, Ni)."""
    k = best.shape[1]
    if prev is None:
        prev = torch.zeros_like(cand[:, :k])  # (B, K, 1, H, Ni)
    else:
        prev = torch.cat([prev, torch.zeros_like(prev[:, :, :1])], dim=2)
    return _gather(torch.cat([prev, cand], dim=1), best)


def _history(steps: list[torch.Tensor], now: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """Past per-step attentions (B, K, H, Ni) plus this step's (B*K, H, Ni) -> (B, K, t, H, Ni)."""
    return torch.stack([*steps, now.view(b, k, *now.shape[1:])], dim=2)


def _improvable(
    improvable: torch.Tensor, run_scores: torch.Tensor, done_scores: torch.Tensor, done: torch.Tensor, generated: int,
    max_new_tokens: int, early_stopping: bool | str, length_penalty: float,
) -> torch.Tensor:
    """HF's heuristic: can the best running beam still beat the worst finished one? (B, 1) bool."""
    if early_stopping == "never" and length_penalty > 0.0:
        best_len = max_new_tokens
    else:
        best_len = generated
    best_running = run_scores[:, :1] / float(best_len) ** length_penalty
    worst_done = torch.where(done, done_scores.amin(dim=1, keepdim=True), torch.full_like(done_scores, _NEG))
    return improvable & (best_running > worst_done).any(dim=-1, keepdim=True)


def _finished(improvable: torch.Tensor, done: torch.Tensor, early_stopping: bool | str) -> torch.Tensor:
    """(B,) True where nothing can change any more."""
    full = done.all(dim=-1) if early_stopping is True else torch.zeros_like(done[:, 0])
    return ~improvable[:, 0] | full
