"""Greedy acceptance, bonus token and the committed output row of every request in one launch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sglang_dflash.acceptance import Acceptance


@triton.jit
def _greedy_accept_kernel(
    block_ptr, top1_ptr, accept_ptr, commit_ptr, bonus_ptr, out_ptr, WIDTH: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    base = row * WIDTH
    # draft j+1 is checked against the target's argmax after position j
    draft = tl.load(block_ptr + base + offs + 1, mask=offs < WIDTH - 1, other=0)
    top1 = tl.load(top1_ptr + base + offs, mask=offs < WIDTH, other=0)
    miss = (draft != top1) | (offs >= WIDTH - 1)
    accepted = tl.min(tl.where(miss, offs, WIDTH - 1), axis=0)
    bonus = tl.sum(tl.where(offs == accepted, top1, 0), axis=0)
    out = tl.where(offs == accepted, bonus, draft)
    tl.store(out_ptr + base + offs, out, mask=offs < WIDTH)
    tl.store(accept_ptr + row, accepted)
    tl.store(commit_ptr + row, accepted + 1)
    tl.store(bonus_ptr + row, bonus)


def empty_acceptance(bs: int, width: int, device) -> Acceptance:
    """Output buffers an acceptance kernel fills: accepted, committed, last token, committed row."""
    vec = lambda: torch.empty((bs,), dtype=torch.int64, device=device)  # noqa: E731
    return Acceptance(vec(), vec(), vec(), torch.empty((bs, width), dtype=torch.int64, device=device))


def greedy_accept_triton(block_tokens: torch.Tensor, target_top1: torch.Tensor) -> Acceptance:
    """Same contract as ``sglang_dflash.acceptance.greedy_accept`` (padding after the bonus may differ)."""
    bs, width = block_tokens.shape
    acc = empty_acceptance(bs, width, block_tokens.device)
    if bs:
        _greedy_accept_kernel[(bs,)](
            block_tokens.contiguous(), target_top1.contiguous(), *acc,
            WIDTH=width, BLOCK=triton.next_power_of_2(width),
        )
    return acc
