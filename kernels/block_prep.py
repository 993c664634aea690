"""Block preparation in one launch: token ids, positions and reserved KV slots of every request."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sglang_dflash.block import Block


@triton.jit
def _prepare_block_kernel(
    bonus_ptr, seq_lens_ptr, pool_idx_ptr, req_to_token_ptr, req_to_token_stride,
    ids_ptr, pos_ptr, locs_ptr, mask_token_id, WIDTH: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    live = offs < WIDTH
    start = tl.load(seq_lens_ptr + row).to(tl.int64)
    pool = tl.load(pool_idx_ptr + row).to(tl.int64)
    bonus = tl.load(bonus_ptr + row).to(tl.int64)
    pos = start + offs
    ids = tl.where(offs == 0, bonus, mask_token_id)
    locs = tl.load(req_to_token_ptr + pool * req_to_token_stride + pos, mask=live, other=0).to(tl.int64)
    tl.store(ids_ptr + row * WIDTH + offs, ids, mask=live)
    tl.store(pos_ptr + row * WIDTH + offs, pos, mask=live)
    tl.store(locs_ptr + row * WIDTH + offs, locs, mask=live)


def prepare_block_triton(
    bonus_tokens: torch.Tensor,
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    mask_token_id: int,
    block_size: int,
) -> Block:
    """Same contract as ``sglang_dflash.block.prepare_block``."""
    bs = seq_lens.shape[0]
    dev = seq_lens.device
    ids = torch.empty((bs, block_size), dtype=torch.int64, device=dev)
    pos = torch.empty((bs, block_size), dtype=torch.int64, device=dev)
    locs = torch.empty((bs, block_size), dtype=torch.int64, device=dev)
    if bs:
        _prepare_block_kernel[(bs,)](
            bonus_tokens, seq_lens, req_pool_indices, req_to_token, req_to_token.stride(0),
            ids, pos, locs, mask_token_id, WIDTH=block_size, BLOCK=triton.next_power_of_2(block_size),
        )
    return Block(ids, pos, locs)
