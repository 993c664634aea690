"""Block preparation: the draft's input block and where its KV lives (pure tensor functions)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Block(NamedTuple):
    token_ids: torch.Tensor  # [bs, B]: the last committed-but-unverified token, then mask tokens
    positions: torch.Tensor  # [bs, B]: seq_len .. seq_len + B - 1
    cache_locs: torch.Tensor  # [bs, B]: KV slots reserved for those positions (target and draft pools)


def prepare_block(
    bonus_tokens: torch.Tensor,
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    mask_token_id: int,
    block_size: int,
) -> Block:
    """Slot 0 holds the bonus token of the previous step (not yet in the target KV) at position
    ``seq_len``; the draft and then the target verify write their K/V at the same reserved slots,
    so a committed token's draft context KV sits at the index its target KV uses."""
    bs = seq_lens.shape[0]
    offsets = torch.arange(block_size, device=seq_lens.device, dtype=torch.int64)
    positions = seq_lens.to(torch.int64).unsqueeze(1) + offsets
    token_ids = torch.full((bs, block_size), mask_token_id, dtype=torch.int64, device=seq_lens.device)
    token_ids[:, 0] = bonus_tokens
    rows = req_pool_indices.to(torch.int64).unsqueeze(1)
    cache_locs = req_to_token[rows, positions].to(torch.int64)
    return Block(token_ids, positions, cache_locs)
