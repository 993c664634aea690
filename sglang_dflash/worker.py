"""The DFLASH speculative worker that SGLang's scheduler drives (spec-v2 interface).

One decode step: block preparation -> one draft forward -> greedy draft tokens -> one target
verify forward -> acceptance -> draft context KV for the committed tokens.  The scheduler then
commits ``accept_lens`` tokens per request, applies stop conditions token by token, and keeps
the bonus token in ``next_draft_input`` for the next step.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace

import torch

from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
from sglang.srt.speculative.base_spec_worker import BaseSpecWorker
from sglang.srt.speculative.draft_worker_common import build_draft_tp_worker

from sglang_dflash.acceptance import greedy_accept
from sglang_dflash.block import Block, prepare_block
from sglang_dflash.config import parse_draft_config, target_shape_from_config
from sglang_dflash.context import write_context_kv
from sglang_dflash.controlled_acceptance import ControlledAcceptance
from sglang_dflash.drafting import draft_forward, draft_head_of, greedy_draft_tokens
from sglang_dflash.draft_model import DFlashDraftModel
from sglang_dflash.grammar import BlockGrammar, PendingBlock
from sglang_dflash.integration.hooks import mark_draft_backend
from sglang_dflash.kv_cache import DraftState
from sglang_dflash.logprobs import fill_verify_logprobs
from sglang_dflash.pending_output import PendingOutputs
from sglang_dflash.profiling import PhaseTimer, StepProfiler
from sglang_dflash.sampling import (
    counts_output, emitted_lens, params_from_requests, processed_logits, rejection_accept, target_probs,
    wrong_accept_for_tests,
)
from sglang_dflash.verification import plan_verify, run_verify
from sglang_dflash.verify_graphs import VerifyGraphs
from sglang_dflash.verify_width import VerifyWidth

logger = logging.getLogger("sglang_dflash")

# Test-only: a deliberately wrong sampled acceptance rule, so the statistical test can show it
# catches one (tests/test_sampling_distribution.py).  Never set it for serving.
WRONG_ACCEPT_ENV = "SGLANG_DFLASH_TEST_WRONG_ACCEPT"


def needs_sampling(info) -> bool:
    """Whether any request's next token is not the argmax of the raw logits (temperature > 0,
    penalties, min_new_tokens, logit_bias).  Reads flags SGLang already keeps for the batch:
    the all-greedy hot path costs no per-request work."""
    return info is not None and not (
        info.is_all_greedy and info.logit_bias is None
        and info.acc_additive_penalties is None and info.acc_scaling_penalties is None
    )


class DFlashWorker(BaseSpecWorker):
    def __init__(self, server_args, gpu_id: int, ps, nccl_port: int, target_worker) -> None:
        super().__init__()
        self.server_args = server_args
        self._target_worker = target_worker
        self.device = target_worker.device
        bundle = build_draft_tp_worker(
            server_args=server_args,
            gpu_id=gpu_id,
            ps=replace(ps, pp_rank=0),
            nccl_port=nccl_port,
            target_model_config=target_worker.model_runner.model_config,
            algo_label="DFLASH",
            attention_backend_override=server_args.speculative_draft_attention_backend,
        )
        self._draft_worker = bundle.draft_worker
        self.draft_runner = bundle.draft_model_runner
        self.draft_model: DFlashDraftModel = bundle.draft_model
        target_cfg = target_worker.model_runner.model_config.hf_config
        self.cfg = parse_draft_config(
            self.draft_runner.model_config.hf_config,
            target_shape_from_config(target_cfg),
            server_args.speculative_num_draft_tokens,
        )
        self.block_size = self.cfg.block_size
        target_model = target_worker.model_runner.model
        self.draft_model.bind_target(target_model)
        self.draft_head = draft_head_of(target_model.lm_head, target_worker.model_runner.model_config.vocab_size,
                                        ps.tp_rank, server_args.tp_size)
        # The overlap scheduler reserves for step n+1 before step n's commit is counted
        # (sglang_dflash/kv_cache.py): two blocks ahead then, one without overlap.
        self.lookahead = self.block_size * (1 if server_args.disable_overlap_schedule else 2)
        # Penalty counts need every emitted token; under overlap the host sees a forward's late.
        self.unseen_outputs = None if server_args.disable_overlap_schedule else PendingOutputs()
        self.tp_rank = ps.tp_rank
        if str(self.device).startswith("cuda"):  # one launch each instead of a dozen small kernels
            from sglang_dflash.kernels.accept import greedy_accept_triton
            from sglang_dflash.kernels.block_prep import prepare_block_triton
            from sglang_dflash.kernels.sample_accept import sample_accept_triton

            self.prepare_block, self.accept = prepare_block_triton, greedy_accept_triton
            self.sample_accept = sample_accept_triton
        else:
            self.prepare_block, self.accept = prepare_block, greedy_accept
            self.sample_accept = rejection_accept
        if os.environ.get(WRONG_ACCEPT_ENV) == "1":
            logger.warning("TEST-ONLY MODE: %s=1 — DFLASH samples with a deliberately WRONG acceptance rule; "
                           "its output is NOT the target's distribution. Never use this for serving.",
                           WRONG_ACCEPT_ENV)
            self.sample_accept = wrong_accept_for_tests
        self.timer = PhaseTimer.from_env(self.device)
        self.profiler = StepProfiler.from_env()
        self.controlled = ControlledAcceptance.from_env(self.block_size - 1)
        self.verify_width = VerifyWidth.from_env(self.block_size, log=ps.tp_rank == 0)
        self.verify_graphs = None  # narrower verify widths' CUDA graphs (init_cuda_graphs)
        if self.tp_rank == 0:
            logger.info(
                "sglang-dflash worker ready: block %d, draft %s (%d layers, causal %s), draft backend %s",
                self.block_size, type(self.draft_model).__name__, self.cfg.num_layers,
                list(self.cfg.layer_causal), bundle.resolved_attention_backend,
            )

    # --- what the scheduler needs from a spec worker besides the forward ---------------------
    @property
    def draft_worker(self):
        return self._draft_worker

    @property
    def spec_v2_attn_backends(self) -> tuple:
        return (self._target_worker.model_runner.attn_backend, self.draft_runner.attn_backend)

    def alloc_memory_pool(self, memory_pool_config=None, req_to_token_pool=None, token_to_kv_pool_allocator=None):
        # The draft shares the target's slot space: same req_to_token table and allocator.
        self._draft_worker.alloc_memory_pool(
            memory_pool_config=memory_pool_config,
            req_to_token_pool=req_to_token_pool,
            token_to_kv_pool_allocator=token_to_kv_pool_allocator,
        )
        if self.tp_rank == 0:
            logger.info("sglang-dflash draft KV pool: %s", type(self.draft_runner.token_to_kv_pool).__name__)

    def init_attention_backends(self):
        self._draft_worker.init_attention_backends()
        mark_draft_backend(self.draft_runner.attn_backend)

    def init_cuda_graphs(self):
        # SGLang decides (CUDA graphs on a GPU unless disabled); the draft graph holds one block forward.
        self._draft_worker.init_cuda_graphs()
        if self.verify_width is not None and str(self.device).startswith("cuda"):
            self.verify_graphs = VerifyGraphs.capture(self.target_worker.model_runner, self.block_size,
                                                      self.verify_width.knee)

    def __getattr__(self, name):
        # Everything else (memory info, weight updates, ...) is the target worker's business.
        if name == "_target_worker":
            raise AttributeError(name)
        return getattr(self._target_worker, name)

    # --- the forward -------------------------------------------------------------------------
    def forward_batch_generation(self, batch, on_publish=None, grammar_barrier=None) -> GenerationBatchResult:
        if batch.forward_mode.is_extend() or batch.is_extend_in_batch:
            result = self._prefill(batch)
        elif batch.forward_mode.is_idle() or batch.batch_size() == 0:
            result = self._idle()
        else:
            if grammar_barrier is not None and batch.has_grammar:
                # Overlap: the previous step's result is not processed yet; its committed tokens
                # must be in the grammars before this step reads their states.
                grammar_barrier()
            if self.profiler is not None:
                self.profiler.before_step(batch.batch_size())
            result = self._decode(batch)
            if self.profiler is not None:
                self.profiler.after_step(batch.batch_size())
        if on_publish is not None:
            on_publish(result.new_seq_lens)
        return result

    def _idle(self) -> GenerationBatchResult:
        empty = torch.empty((0,), dtype=torch.int64, device=self.device)
        return GenerationBatchResult(
            logits_output=None,
            next_token_ids=empty,
            accept_lens=empty.to(torch.int32),
            next_draft_input=DraftState(bonus_tokens=empty, lookahead=self.lookahead),
            can_run_cuda_graph=False,
            speculative_num_draft_tokens=self.block_size,
            new_seq_lens=empty,
        )

    def _prefill(self, batch) -> GenerationBatchResult:
        """Target prefill (any chunk) capturing features; the chunk's tokens go straight into the
        draft context KV, before the scheduler can share them through the radix cache."""
        if self.timer is not None:
            self.timer.idle()
        launch_lens = [len(r.output_ids) for r in batch.reqs] if self.unseen_outputs is not None else None
        result = self.target_worker.forward_batch_generation(batch, capture_hidden_mode=CaptureHiddenMode.FULL)
        features = result.logits_output.hidden_states
        if features is None:
            raise RuntimeError("DFLASH: the target returned no captured hidden states for the prefill")
        positions = torch.cat([
            torch.arange(p, p + n, dtype=torch.int64) for p, n in zip(batch.prefix_lens, batch.extend_lens)
        ]).to(self.device)
        write_context_kv(self.draft_model, self.draft_runner.token_to_kv_pool, features, positions,
                         batch.out_cache_loc.to(torch.int64))
        result.logits_output.hidden_states = None
        result.next_draft_input = DraftState(bonus_tokens=result.next_token_ids.to(torch.int64), lookahead=self.lookahead)
        result.new_seq_lens = batch.seq_lens
        if self.unseen_outputs is not None:
            ids = result.next_token_ids.to(torch.int64).view(-1, 1)
            self.unseen_outputs.record(batch.reqs, launch_lens, ids, torch.ones_like(ids[:, 0]))
        return result

    def _mark(self, phase: str) -> None:
        if self.timer is not None:
            self.timer.mark(phase)

    def _sampled_accept(self, reqs, seq_lens: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor):
        """Exact rejection acceptance against each request's processed target distribution
        (sglang_dflash/sampling.py); greedy requests in the batch keep the greedy rule."""
        bs, width = tokens.shape
        params = params_from_requests(reqs, logits.shape[-1], tokens.device, emitted_lens(reqs, seq_lens))
        if self.unseen_outputs is not None and params.penalties is not None:
            self.unseen_outputs.add_counts(reqs, params.penalties.counts,
                                           [counts_output(r.sampling_params) for r in reqs])
        x = processed_logits(logits.view(bs, width, -1), tokens[:, 1:], params)
        probs = target_probs(x, params)
        # One uniform per acceptance test and one for the emitted token, all independent.
        u = torch.rand((bs, width), device=tokens.device)
        return self.sample_accept(tokens, probs, u)

    def host_seq_lens(self, batch) -> torch.Tensor:
        """Committed lengths on the host for attention planning.  Under the overlap scheduler SGLang
        mirrors them to the host only for backends that ask (torch_native does, triton does not);
        then the scheduler's count plus one block, which the step still running can add at most,
        is a sync-free upper bound, the contract SGLang's backends plan with."""
        if batch.seq_lens_cpu is not None:
            return batch.seq_lens_cpu
        committed = torch.tensor([r.kv_committed_len for r in batch.reqs], dtype=torch.int64)
        return committed + (self.lookahead - self.block_size)

    def _decode(self, batch) -> GenerationBatchResult:
        if self.timer is not None:
            self.timer.start(batch.batch_size())
        state: DraftState = batch.spec_info
        seq_lens = batch.seq_lens
        launch_lens = [len(r.output_ids) for r in batch.reqs] if self.unseen_outputs is not None else None
        block = self.prepare_block(
            state.bonus_tokens, seq_lens, batch.req_pool_indices,
            self.target_worker.model_runner.req_to_token_pool.req_to_token,
            self.cfg.mask_token_id, self.block_size,
        )
        self._mark("prepare")
        graphs = self.verify_graphs
        if self.verify_width is None:
            width = self.block_size
        else:
            width = self.verify_width.choose(batch.reqs, graphs and graphs.widths_for(batch.batch_size()))
        host_lens = self.host_seq_lens(batch)
        hidden = draft_forward(self.draft_runner, block, batch.req_pool_indices, seq_lens, host_lens)
        if width < self.block_size:  # the target verifies the block's first `width` positions
            block = Block(*(t[:, :width] for t in block))
        # host work while the device drafts
        plan = plan_verify(self.target_worker, batch, block, host_lens, graphs and graphs.runner(width))
        drafts = greedy_draft_tokens(hidden, self.draft_head)
        grammar = BlockGrammar.start(batch, width)  # structured output: None when unconstrained
        if grammar is not None:
            drafts = grammar.draft(hidden, self.draft_head, drafts)
        if self.controlled is not None:
            drafts = self.controlled.override(batch.reqs, drafts, width, seq_lens)
        tokens = plan.fill(drafts[:, : width - 1])
        self._mark("draft")

        pending = PendingBlock(tokens) if grammar is not None else None
        with graphs.replaying(width) if graphs else contextlib.nullcontext():
            logits_output, can_graph = run_verify(self.target_worker, plan)
        if self.verify_width is not None:
            self.verify_width.ran(width, batch.batch_size(), can_graph)
        if grammar is not None:
            # Each position's logits masked by the grammar state after the drafts before it: the
            # acceptance below sees what plain constrained decoding sees.
            grammar.constrain_verify(pending, logits_output.next_token_logits)
        self._mark("verify")
        if needs_sampling(batch.sampling_info):
            acc = self._sampled_accept(batch.reqs, seq_lens, tokens, logits_output.next_token_logits)
        else:
            target_top1 = logits_output.next_token_logits.argmax(dim=-1).view(tokens.shape)
            acc = self.accept(tokens, target_top1)
        fill_verify_logprobs(batch, logits_output, acc.out_tokens)
        if self.unseen_outputs is not None:
            self.unseen_outputs.record(batch.reqs, launch_lens, acc.out_tokens, acc.commit_lens)
        self._mark("accept")

        # Every block position is projected, committed or not: a rejected position's slot lies
        # inside the next block, whose draft forward rewrites it before anything reads it.
        # Projecting B rows instead of selecting the committed ones avoids a host sync.
        write_context_kv(
            self.draft_model, self.draft_runner.token_to_kv_pool,
            logits_output.hidden_states, block.positions.reshape(-1), block.cache_locs.reshape(-1),
        )
        logits_output.hidden_states = None
        self._mark("context_kv")
        if self.timer is not None:
            self.timer.end()
        return GenerationBatchResult(
            logits_output=logits_output,
            next_token_ids=acc.out_tokens.reshape(-1),
            accept_lens=acc.commit_lens.to(torch.int32),
            next_draft_input=DraftState(bonus_tokens=acc.bonus, lookahead=self.lookahead),
            can_run_cuda_graph=can_graph,
            speculative_num_draft_tokens=width,  # the row stride of next_token_ids
            new_seq_lens=seq_lens + acc.commit_lens.to(seq_lens.dtype),
        )
