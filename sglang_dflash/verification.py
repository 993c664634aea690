"""The target verify forward over a block: logits for every position plus the captured features.

Split in two so the host plans the verify (forward batch, attention metadata, CUDA-graph buffers)
while the device runs the draft: ``plan_verify`` needs only the block's positions and slots,
``PlannedVerify.fill`` writes the drafted tokens into the planned input, ``run_verify`` launches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode

from sglang_dflash.block import Block
from sglang_dflash.drafting import block_spec_info


class PlannedVerify(NamedTuple):
    fb: ForwardBatch
    tokens: torch.Tensor  # [bs, W] view of the forward's input ids: slot 0 holds the bonus token

    def fill(self, drafts: torch.Tensor) -> torch.Tensor:
        """Writes ``drafts`` [bs, W-1] into slots 1.. and returns the block's tokens [bs, W].  A
        graph replay copies the input ids into its buffers at launch, so it sees them."""
        self.tokens[:, 1:].copy_(drafts)
        return self.tokens


def plan_verify(target_worker, batch, block: Block, host_lens: torch.Tensor, graph=None) -> PlannedVerify:
    """Builds and plans the causal target forward over ``block`` [bs, W] (its slots 1.. hold mask
    tokens until ``PlannedVerify.fill`` writes the drafts); ``host_lens``: the committed lengths
    on the host, or an upper bound of them (the worker's ``host_seq_lens``); ``graph``: the CUDA
    graph runner captured for width W (default: the target's own, the full block's)."""
    bs, width = block.token_ids.shape
    tokens = block.token_ids.reshape(-1).clone()
    batch.input_ids = tokens
    batch.out_cache_loc = block.cache_locs.reshape(-1)
    batch.spec_info = block_spec_info(block._replace(token_ids=tokens.view(bs, width)), CaptureHiddenMode.FULL)
    batch.forward_mode = ForwardMode.TARGET_VERIFY
    # Host-side bound for backend planning: committed prefix plus the block.
    seq_lens_cpu, seq_lens_sum = batch.seq_lens_cpu, batch.seq_lens_sum
    batch.seq_lens_cpu = host_lens + width
    batch.seq_lens_sum = int(batch.seq_lens_cpu.sum())
    try:
        fb = ForwardBatch.init_new(batch, target_worker.model_runner, capture_hidden_mode=CaptureHiddenMode.FULL,
                                   return_hidden_states_before_norm=False)
    finally:
        batch.seq_lens_cpu, batch.seq_lens_sum = seq_lens_cpu, seq_lens_sum
    runner = target_worker.model_runner
    graph = graph or runner.decode_cuda_graph_runner
    # The forward below runs with skip_attn_backend_init: a graph replay then expects load_batch
    # to have run (it keeps the padded size it computed), an eager forward the attention metadata.
    if graph and graph.can_run_graph(fb):
        graph.load_batch(fb)
    else:
        runner.attn_backend.init_forward_metadata(fb)
    return PlannedVerify(fb, fb.input_ids.view(bs, width))


def run_verify(target_worker, plan: PlannedVerify):
    """Runs the planned (and filled) verify.  Returns SGLang's logits output
    (``next_token_logits`` [bs*W, V], ``hidden_states`` = the captured target layers [bs*W, K*H])
    and whether a CUDA graph ran."""
    out = target_worker.forward_batch_generation(batch=None, forward_batch=plan.fb, is_verify=True,
                                                 skip_attn_backend_init=True)
    return out.logits_output, out.can_run_cuda_graph
