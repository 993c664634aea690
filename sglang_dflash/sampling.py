"""Sampling (temperature > 0, top-k/top-p/min-p, penalties, logit_bias, min_new_tokens): the
target's processed distribution at every block position, and exact rejection acceptance of the
deterministic draft (pure functions).

Semantics follow SGLang 0.5.17's own decode path (ScheduleBatch -> SamplingBatchInfo ->
Sampler, non-overlapped scheduling, pytorch sampling backend), so that what DFLASH emits is
distributed exactly as what plain decoding emits:

* penalties count OUTPUT tokens only (the prompt never counts), all of them up to the last one
  emitted: what SGLang's penalizers hold under its non-overlapped scheduler.  (Its overlapped
  scheduler feeds them one token late, the prompt's last token first: an SGLang quirk DFLASH
  does not reproduce; tests/test_sampling_distribution.py pins both down.)  Frequency subtracts
  ``f * count``, presence subtracts ``p`` once a token occurred, min_new_tokens adds -inf to the
  stop tokens (the request's stop_token_ids, the tokenizer's eos and additional stop ids) while
  fewer than ``min_new_tokens`` tokens were output; these are summed first, then repetition
  scales every occurred token's logit (x * r below zero, x / r above), then logit_bias is added
  (additive before repetition is the overlapped path's order; the non-overlapped path's order of
  the two follows a set of classes and varies between processes);
* then ``softmax(logits / T)``; top-k keeps the k most probable, top-p keeps a token while the
  mass sorted before it is <= top_p (both on the same sorted order), min-p drops tokens below
  ``min_p * max prob``; what is left is renormalised (SGLang's multinomial does the same);
* greedy requests (temperature 0 is top_k 1) take the argmax of the processed logits.

At block position i the target predicts the token after [bonus, d1 .. di]; by the time that
token is emitted d1 .. di have been emitted too, so they count as output for its penalties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from sglang_dflash.acceptance import Acceptance


@dataclass
class Penalties:
    counts: torch.Tensor  # [bs, V] float32: how often each token was output so far (committed)
    frequency: torch.Tensor  # [bs, 1]
    presence: torch.Tensor  # [bs, 1]
    repetition: torch.Tensor  # [bs, 1] (1.0 = none)
    out_lens: torch.Tensor  # [bs, 1] int64: tokens output so far
    min_new_tokens: torch.Tensor  # [bs, 1] int64
    stop_mask: torch.Tensor  # [bs, V] bool: tokens min_new_tokens forbids early


@dataclass
class SamplingParamsBatch:
    greedy: torch.Tensor  # [bs] bool
    temperatures: torch.Tensor  # [bs, 1]
    top_ks: torch.Tensor  # [bs] int64, at most V
    top_ps: torch.Tensor  # [bs]
    min_ps: torch.Tensor  # [bs]
    need_sort: bool  # some sampled row has top-k < V or top-p < 1
    need_min_p: bool
    logit_bias: Optional[torch.Tensor]  # [bs, V]
    penalties: Optional[Penalties]


def _stop_ids(req) -> set:
    sp, tok = req.sampling_params, getattr(req, "tokenizer", None)
    ids = set(sp.stop_token_ids or ())
    if tok is not None:
        ids |= set(getattr(tok, "additional_stop_token_ids", None) or ())
        if getattr(tok, "eos_token_id", None) is not None:
            ids.add(tok.eos_token_id)
    return ids


def counts_output(sp) -> bool:
    """Whether a request's penalties read the counts of its output tokens."""
    return bool(sp.frequency_penalty or sp.presence_penalty or sp.repetition_penalty != 1.0)


def emitted_lens(reqs: Sequence, seq_lens: torch.Tensor) -> torch.Tensor:
    """Tokens each request has emitted before this step, [bs] int64, from its device length: the KV
    holds the prompt and every emitted token but the last.  Under the overlap scheduler the host's
    ``output_ids`` do not have the previous step's tokens yet; ``seq_lens`` has them."""
    prompt_lens = torch.tensor([len(r.origin_input_ids) for r in reqs], dtype=torch.int64)
    return seq_lens.to(torch.int64) - prompt_lens.to(seq_lens.device, non_blocking=True) + 1


def params_from_requests(reqs: Sequence, vocab_size: int, device, emitted: torch.Tensor) -> SamplingParamsBatch:
    """Each request's SamplingParams (and, for penalties, its output so far) as batch tensors.
    ``emitted`` [bs]: tokens each request has emitted before this step (``emitted_lens``)."""
    sps = [r.sampling_params for r in reqs]
    bs = len(reqs)

    def col(values, dtype):
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    greedy = [sp.top_k <= 1 for sp in sps]
    top_ks = [min(sp.top_k, vocab_size) for sp in sps]
    need_sort = any(not g and (k < vocab_size or sp.top_p < 1.0) for g, k, sp in zip(greedy, top_ks, sps))
    need_min_p = any(not g and sp.min_p > 0 for g, sp in zip(greedy, sps))

    logit_bias = None
    if any(sp.logit_bias for sp in sps):
        logit_bias = torch.zeros((bs, vocab_size), dtype=torch.float32)
        for i, sp in enumerate(sps):
            for tok, value in (sp.logit_bias or {}).items():
                logit_bias[i, int(tok)] = value
        logit_bias = logit_bias.to(device, non_blocking=True)

    penalties = None
    if any(counts_output(sp) or sp.min_new_tokens for sp in sps):
        counts = torch.zeros((bs, vocab_size), dtype=torch.float32)
        stop_mask = torch.zeros((bs, vocab_size), dtype=torch.bool)
        for i, (r, sp) in enumerate(zip(reqs, sps)):
            # Under the overlap scheduler the host's output_ids may miss the previous forward's
            # tokens: the worker adds them on the device (sglang_dflash/pending_output.py).
            if r.output_ids and counts_output(sp):
                counts[i].index_add_(0, torch.tensor(r.output_ids, dtype=torch.int64),
                                     torch.ones(len(r.output_ids)))
            if sp.min_new_tokens:
                ids = [t for t in _stop_ids(r) if 0 <= t < vocab_size]
                stop_mask[i, ids] = True
        penalties = Penalties(
            counts=counts.to(device, non_blocking=True),
            frequency=col([[sp.frequency_penalty] for sp in sps], torch.float32),
            presence=col([[sp.presence_penalty] for sp in sps], torch.float32),
            repetition=col([[sp.repetition_penalty] for sp in sps], torch.float32),
            out_lens=emitted.to(device=device, dtype=torch.int64).view(-1, 1),
            min_new_tokens=col([[sp.min_new_tokens] for sp in sps], torch.int64),
            stop_mask=stop_mask.to(device, non_blocking=True),
        )
    return SamplingParamsBatch(
        greedy=col(greedy, torch.bool),
        temperatures=col([[sp.temperature] for sp in sps], torch.float32),
        top_ks=col(top_ks, torch.int64),
        top_ps=col([sp.top_p for sp in sps], torch.float32),
        min_ps=col([sp.min_p for sp in sps], torch.float32),
        need_sort=need_sort,
        need_min_p=need_min_p,
        logit_bias=logit_bias,
        penalties=penalties,
    )


def processed_logits(logits: torch.Tensor, drafts: torch.Tensor, params: SamplingParamsBatch) -> torch.Tensor:
    """``logits`` [bs, B, V] of the verify forward, ``drafts`` [bs, B-1] -> float32 [bs, B, V]
    with penalties (counting d1 .. di at position i), min_new_tokens and logit_bias applied."""
    x = logits.float().clone()
    pen = params.penalties
    if pen is not None:
        counts = pen.counts.clone()
        ones = torch.ones_like(drafts[:, :1], dtype=counts.dtype)
        for i in range(x.shape[1]):
            if i:
                counts.scatter_add_(1, drafts[:, i - 1 : i], ones)
            seen = counts > 0
            row = x[:, i]
            row -= pen.frequency * counts + pen.presence * seen
            early = (pen.out_lens + i) < pen.min_new_tokens
            row.masked_fill_(pen.stop_mask & early, float("-inf"))
            scale = torch.where(seen, pen.repetition, 1.0)
            x[:, i] = torch.where(row < 0, row * scale, row / scale)
    if params.logit_bias is not None:
        x += params.logit_bias[:, None, :]
    return x


def target_probs(x: torch.Tensor, params: SamplingParamsBatch) -> torch.Tensor:
    """Processed logits [bs, B, V] -> the distribution plain decoding samples from at each block
    position [bs, B, V] (normalised).  Greedy rows become one-hot at the argmax, which turns the
    rejection rule below into the greedy rule for them: accept iff d == argmax, else argmax."""
    bs, width, vocab = x.shape
    probs = torch.softmax(x / params.temperatures[:, :, None], dim=-1).view(bs * width, vocab)
    if params.need_sort:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        rank = torch.arange(vocab, device=x.device)
        top_k = params.top_ks.repeat_interleave(width)[:, None]
        top_p = params.top_ps.repeat_interleave(width)[:, None]
        drop = (rank >= top_k) | ((sorted_p.cumsum(dim=-1) - sorted_p) > top_p)
        if params.need_min_p:
            drop |= sorted_p < sorted_p[:, :1] * params.min_ps.repeat_interleave(width)[:, None]
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_p.masked_fill(drop, 0.0))
    elif params.need_min_p:
        floor = probs.amax(dim=-1, keepdim=True) * params.min_ps.repeat_interleave(width)[:, None]
        probs = probs.masked_fill(probs < floor, 0.0)
    probs = (probs / probs.sum(dim=-1, keepdim=True)).view(bs, width, vocab)
    one_hot = torch.zeros_like(probs).scatter_(2, x.argmax(dim=-1, keepdim=True), 1.0)
    return torch.where(params.greedy[:, None, None], one_hot, probs)


def sample_from(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample of each row of ``weights`` [N, V] (unnormalised, >= 0) with uniform
    ``u`` [N] in [0, 1): the first index whose running sum exceeds ``u * total``.  Should
    rounding leave no such index, the last index with positive weight."""
    cdf = weights.cumsum(dim=-1)
    target = (u * cdf[:, -1])[:, None]
    first = (cdf <= target).sum(dim=-1)
    vocab = weights.shape[-1]
    last_nz = torch.where(weights > 0, torch.arange(vocab, device=weights.device), -1).amax(dim=-1)
    return torch.minimum(first, last_nz)


def rejection_accept(block_tokens: torch.Tensor, probs: torch.Tensor, u: torch.Tensor) -> Acceptance:
    """``block_tokens`` [bs, B] = [t, d1 .. d_{B-1}], ``probs`` [bs, B, V] the target's processed
    distribution after each block position, ``u`` [bs, B] independent uniforms in [0, 1).

    d_{i+1} is accepted when u[:, i] < p_i(d_{i+1}) and every earlier draft was accepted.  At the
    first rejected position k the emitted token is drawn (with u[:, B-1]) from p_k with d_{k+1}
    removed and renormalised; if all drafts are accepted, from p_{B-1} (the bonus).

    Why this is exactly the target's own sampling: the draft is deterministic, so at a position
    whose context is already target-distributed, P(emit d) = p(d) (accepted) and, for x != d,
    P(emit x) = (1 - p(d)) * p(x) / (1 - p(d)) = p(x) (rejected, then residual).  The residual
    draw uses u[:, B-1], which no acceptance test reads, so it is independent of the event that
    led to it; each acceptance test reads its own uniform.  The next position's context then
    holds target-distributed tokens again, so by induction the emitted sequence is distributed
    exactly as token-by-token sampling from the target."""
    bs, width = block_tokens.shape
    drafts = block_tokens[:, 1:]
    p_draft = probs[:, :-1].gather(2, drafts.unsqueeze(2)).squeeze(2)
    accepted = (u[:, :-1] < p_draft).to(torch.int64).cumprod(dim=1)
    accept_lens = accepted.sum(dim=1)
    rows = torch.arange(bs, device=block_tokens.device)
    final = probs[rows, accept_lens].clone()
    rejected = accept_lens < width - 1
    rejected_draft = drafts.gather(1, accept_lens.clamp(max=width - 2).unsqueeze(1))
    final.scatter_(1, rejected_draft, torch.where(rejected[:, None], 0.0, final.gather(1, rejected_draft)))
    emitted = sample_from(final, u[:, -1])
    out_tokens = torch.zeros((bs, width), dtype=torch.int64, device=block_tokens.device)
    out_tokens[:, : width - 1] = drafts
    out_tokens.scatter_(1, accept_lens.unsqueeze(1), emitted.unsqueeze(1))
    return Acceptance(accept_lens, accept_lens + 1, emitted, out_tokens)


def wrong_accept_for_tests(block_tokens: torch.Tensor, probs: torch.Tensor, u: torch.Tensor) -> Acceptance:
    """TEST-ONLY, deliberately wrong: as ``rejection_accept`` but a rejected draft stays in the
    residual, so a draft token is emitted with probability p(d) + (1 - p(d)) p(d).  Exists only
    so the statistical test can show it detects a broken rule (SGLANG_DFLASH_TEST_WRONG_ACCEPT)."""
    bs, width = block_tokens.shape
    drafts = block_tokens[:, 1:]
    p_draft = probs[:, :-1].gather(2, drafts.unsqueeze(2)).squeeze(2)
    accept_lens = (u[:, :-1] < p_draft).to(torch.int64).cumprod(dim=1).sum(dim=1)
    emitted = sample_from(probs[torch.arange(bs, device=probs.device), accept_lens], u[:, -1])
    out_tokens = torch.zeros((bs, width), dtype=torch.int64, device=block_tokens.device)
    out_tokens[:, : width - 1] = drafts
    out_tokens.scatter_(1, accept_lens.unsqueeze(1), emitted.unsqueeze(1))
    return Acceptance(accept_lens, accept_lens + 1, emitted, out_tokens)
