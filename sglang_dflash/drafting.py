"""One draft forward over the block, then greedy draft tokens through the target's LM head."""

from __future__ import annotations

from typing import NamedTuple

import torch

from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode
from sglang.srt.speculative.dflash_info import DFlashVerifyInput
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

from sglang_dflash.block import Block


def block_spec_info(block: Block, capture: CaptureHiddenMode) -> DFlashVerifyInput:
    """SGLang's attention backends and CUDA-graph runner recognise a fixed-width block by this type."""
    return DFlashVerifyInput(
        draft_token=block.token_ids.reshape(-1),
        positions=block.positions.reshape(-1),
        draft_token_num=block.token_ids.shape[1],
        capture_hidden_mode=capture,
    )


def draft_forward(draft_runner, block: Block, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor,
                  seq_lens_cpu: torch.Tensor) -> torch.Tensor:
    """Hidden states [bs, B, H] of the draft over the block.  The block attends to the draft
    context KV (committed tokens) plus itself; the draft writes the block's own K/V into the
    reserved slots, which the committed tokens' context KV overwrites after verification."""
    bs, width = block.token_ids.shape
    fb = ForwardBatch(
        forward_mode=ForwardMode.TARGET_VERIFY,
        batch_size=bs,
        input_ids=block.token_ids.reshape(-1),
        req_pool_indices=req_pool_indices,
        seq_lens=seq_lens,
        out_cache_loc=block.cache_locs.reshape(-1),
        seq_lens_sum=int(seq_lens_cpu.sum()) + bs * width,
        seq_lens_cpu=seq_lens_cpu + width,
        positions=block.positions.reshape(-1),
        spec_algorithm=SpeculativeAlgorithm.DFLASH,
        spec_info=block_spec_info(block, CaptureHiddenMode.NULL),
        capture_hidden_mode=CaptureHiddenMode.NULL,
    )
    with torch.inference_mode():
        out = draft_runner.forward(fb)
    return out.logits_output.hidden_states.view(bs, width, -1)


class DraftHead(NamedTuple):
    """This rank's part of the target LM head, as the greedy draft head reads it."""

    weight: torch.Tensor  # [rows, H]: the first ``num_valid`` rows are real tokens, the rest padding
    vocab_start: int  # token id of row 0
    num_valid: int
    sharded: bool  # other tensor-parallel ranks hold the rest of the vocabulary


def draft_head_of(lm_head, vocab_size: int, tp_rank: int, tp_size: int) -> DraftHead:
    """Reads the vocabulary range of this rank's LM head rows.  SGLang's vocab-parallel heads say
    it (``shard_indices``); a head without that metadata (e.g. a tied embedding) is either the
    whole vocabulary or, when it has 1/tp of the rows, the rank's contiguous slice."""
    weight = lm_head.weight
    idx = getattr(lm_head, "shard_indices", None)
    if idx is not None:
        start, valid = idx.org_vocab_start_index, idx.num_org_elements
    elif weight.shape[0] >= vocab_size:
        start, valid = 0, vocab_size
    else:
        start = tp_rank * weight.shape[0]
        valid = max(0, min(weight.shape[0], vocab_size - start))
    return DraftHead(weight, start, valid, sharded=tp_size > 1 and valid < vocab_size)


def head_logits(hidden_rows: torch.Tensor, head: DraftHead, vocab_size: int) -> torch.Tensor:
    """Full-vocabulary logits [N, vocab_size] of the target LM head (gathered over ranks, whose
    equal contiguous slices of the padded vocabulary concatenate in rank order)."""
    logits = hidden_rows.to(head.weight.dtype) @ head.weight.t()
    if head.sharded:
        from sglang.srt.distributed import tensor_model_parallel_all_gather

        logits = tensor_model_parallel_all_gather(logits, dim=-1)
    return logits[:, :vocab_size]


def combine_shard_argmax(values: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``values``/``token_ids`` [tp, N]: each rank's best logit and its token id.  The best over
    ranks; on a tie the lowest rank, whose vocabulary slice comes first (argmax picks the first)."""
    best = values.max(dim=0, keepdim=True).values
    first = (values == best).to(torch.int8).argmax(dim=0, keepdim=True)
    return token_ids.gather(0, first).squeeze(0)


def greedy_draft_tokens(hidden: torch.Tensor, head: DraftHead) -> torch.Tensor:
    """Argmax of the target LM head over slots 1..B-1 -> [bs, B-1].  Softcapping (Gemma) is
    monotonic, so the argmax of raw logits is the argmax of capped ones.  Padding rows of the
    head are never proposed; with a vocab-parallel head each rank's best is gathered."""
    bs, width, h = hidden.shape
    weight = head.weight[: head.num_valid]
    logits = hidden[:, 1:].reshape(-1, h).to(weight.dtype) @ weight.t()
    if not head.sharded:
        return (logits.argmax(dim=-1) + head.vocab_start).view(bs, width - 1)
    from sglang.srt.distributed import tensor_model_parallel_all_gather

    values, ids = logits.max(dim=-1)
    values = tensor_model_parallel_all_gather(values.float().unsqueeze(0), dim=0)
    ids = tensor_model_parallel_all_gather((ids + head.vocab_start).unsqueeze(0), dim=0)
    return combine_shard_argmax(values, ids).view(bs, width - 1)
