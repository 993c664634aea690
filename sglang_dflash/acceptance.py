"""The acceptance rule: which drafted tokens the target keeps, and the bonus token (pure functions)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Acceptance(NamedTuple):
    accept_lens: torch.Tensor  # [bs] drafted tokens accepted, 0 .. B-1
    commit_lens: torch.Tensor  # [bs] tokens committed this step = accepted drafts + the bonus
    bonus: torch.Tensor  # [bs] the target's own token after the accepted run
    out_tokens: torch.Tensor  # [bs, B] row i: accepted drafts then the bonus; the rest is padding


def greedy_accept(block_tokens: torch.Tensor, target_top1: torch.Tensor) -> Acceptance:
    """``block_tokens`` [bs, B] = [t, d1 .. d_{B-1}]; ``target_top1`` [bs, B] = the target's argmax
    after each block position.  d_i is kept while every d_j (j <= i) equals the target's argmax
    after position j-1, so the emitted tokens are exactly what greedy target decoding emits."""
    bs, width = block_tokens.shape
    matches = block_tokens[:, 1:] == target_top1[:, :-1]
    accept_lens = matches.to(torch.int64).cumprod(dim=1).sum(dim=1)
    bonus = target_top1.gather(1, accept_lens.unsqueeze(1)).squeeze(1)
    out_tokens = torch.zeros((bs, width), dtype=torch.int64, device=block_tokens.device)
    out_tokens[:, : width - 1] = block_tokens[:, 1:]
    out_tokens.scatter_(1, accept_lens.unsqueeze(1), bonus.unsqueeze(1))
    return Acceptance(accept_lens, accept_lens + 1, bonus, out_tokens)
