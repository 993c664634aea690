"""The target verify forward over a block: logits for every position plus the captured features."""

from __future__ import annotations

import torch

from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode

from sglang_dflash.block import Block
from sglang_dflash.drafting import block_spec_info


def verify_forward(target_worker, batch, block: Block, tokens: torch.Tensor):
    """Runs the target causally over ``tokens`` [bs, B] at the block's positions and slots.
    Returns SGLang's logits output (``next_token_logits`` [bs*B, V], ``hidden_states`` = the
    captured target layers [bs*B, K*H]) and whether a CUDA graph ran."""
    width = tokens.shape[1]
    spec = block_spec_info(block._replace(token_ids=tokens), CaptureHiddenMode.FULL)
    seq_lens_cpu, seq_lens_sum = batch.seq_lens_cpu, batch.seq_lens_sum
    batch.input_ids = tokens.reshape(-1)
    batch.out_cache_loc = block.cache_locs.reshape(-1)
    batch.spec_info = spec
    batch.forward_mode = ForwardMode.TARGET_VERIFY
    # Host-side bound for backend planning: committed prefix plus the block.
    batch.seq_lens_cpu = seq_lens_cpu + width
    batch.seq_lens_sum = int(batch.seq_lens_cpu.sum())
    try:
        fb = ForwardBatch.init_new(batch, target_worker.model_runner, capture_hidden_mode=CaptureHiddenMode.FULL,
                                 return_hidden_states_before_norm=False)
    finally:
        batch.seq_lens_cpu, batch.seq_lens_sum = seq_lens_cpu, seq_lens_sum
    runner = target_worker.model_runner
    graph = runner.decode_cuda_graph_runner
    # skip_attn_backend_init tells the runner the batch is planned: a graph replay then expects
    # load_batch to have run (it keeps the padded size it computed), eager the attention metadata.
    if graph and graph.can_run_graph(fb):
        graph.load_batch(fb)
    else:
        runner.attn_backend.init_forward_metadata(fb)
    out = target_worker.forward_batch_generation(batch=None, forward_batch=fb, is_verify=True,
                                                 skip_attn_backend_init=True)
    return out.logits_output, out.can_run_cuda_graph
