"""Rejection acceptance of the drafted tokens and the emitted (residual or bonus) token for every
request in one launch: the sampled counterpart of ``accept.py``."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sglang_dflash.acceptance import Acceptance
from sglang_dflash.kernels.accept import empty_acceptance


@triton.jit
def _sample_accept_kernel(
    block_ptr, probs_ptr, u_ptr, accept_ptr, commit_ptr, emitted_ptr, out_ptr, vocab,
    WIDTH: tl.constexpr, BLOCK: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    base = row * WIDTH
    row_probs = probs_ptr + row * WIDTH * vocab
    # draft j+1 is tested against the target's distribution after position j, with its own uniform
    has_draft = offs < WIDTH - 1
    draft = tl.load(block_ptr + base + offs + 1, mask=has_draft, other=0)
    p_draft = tl.load(row_probs + offs * vocab + draft, mask=has_draft, other=0.0)
    u = tl.load(u_ptr + base + offs, mask=has_draft, other=1.0)
    miss = (u >= p_draft) | (offs >= WIDTH - 1)
    accepted = tl.min(tl.where(miss, offs, WIDTH - 1), axis=0)
    # the rejected draft leaves the residual; after a full accept nothing is removed
    removed = tl.sum(tl.where(offs == accepted, draft, 0), axis=0)
    removed = tl.where(accepted < WIDTH - 1, removed, -1)
    u_emit = tl.load(u_ptr + base + WIDTH - 1)
    dist = row_probs + accepted * vocab

    voffs = tl.arange(0, BLOCK_V)
    total = 0.0
    for start in range(0, vocab, BLOCK_V):
        idx = start + voffs
        w = tl.load(dist + idx, mask=idx < vocab, other=0.0)
        total += tl.sum(tl.where(idx == removed, 0.0, w), axis=0)
    # inverse CDF: the first index whose running sum exceeds u * total (as sample_from)
    target = u_emit * total
    running = 0.0
    first = vocab
    last_nz = -1
    for start in range(0, vocab, BLOCK_V):
        idx = start + voffs
        w = tl.load(dist + idx, mask=idx < vocab, other=0.0)
        w = tl.where(idx == removed, 0.0, w)
        cdf = running + tl.cumsum(w, axis=0)
        first = tl.minimum(first, tl.min(tl.where((cdf > target) & (idx < vocab), idx, vocab), axis=0))
        last_nz = tl.maximum(last_nz, tl.max(tl.where(w > 0, idx, -1), axis=0))
        running += tl.sum(w, axis=0)
    emitted = tl.minimum(first, last_nz).to(tl.int64)

    out = tl.where(offs == accepted, emitted, draft)
    tl.store(out_ptr + base + offs, out, mask=offs < WIDTH)
    tl.store(accept_ptr + row, accepted)
    tl.store(commit_ptr + row, accepted + 1)
    tl.store(emitted_ptr + row, emitted)


def sample_accept_triton(block_tokens: torch.Tensor, probs: torch.Tensor, u: torch.Tensor) -> Acceptance:
    """Same contract as ``sglang_dflash.sampling.rejection_accept`` (padding after the emitted
    token may differ; the running sums may round differently, moving a draw that lands within
    rounding of a CDF step)."""
    bs, width = block_tokens.shape
    vocab = probs.shape[-1]
    acc = empty_acceptance(bs, width, block_tokens.device)
    if bs:
        _sample_accept_kernel[(bs,)](
            block_tokens.contiguous(), probs.float().contiguous(), u.float().contiguous(), *acc,
            vocab, WIDTH=width, BLOCK=triton.next_power_of_2(width), BLOCK_V=1024,
        )
    return acc
