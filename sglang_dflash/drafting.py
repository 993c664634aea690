"""One draft forward over the block, then greedy draft tokens through the target's LM head."""

from __future__ import annotations

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


def greedy_draft_tokens(hidden: torch.Tensor, lm_head_weight: torch.Tensor) -> torch.Tensor:
    """Argmax of the target LM head over slots 1..B-1 -> [bs, B-1].  Softcapping (Gemma) is
    monotonic, so the argmax of raw logits is the argmax of capped ones."""
    bs, width, h = hidden.shape
    logits = hidden[:, 1:].reshape(-1, h).to(lm_head_weight.dtype) @ lm_head_weight.t()
    return logits.argmax(dim=-1).view(bs, width - 1)
