"""KV bookkeeping between steps: the per-request state the scheduler carries, and slot reservation.

Each decode step writes a whole block (B positions) into the target and draft KV.  Before the
step, every request's allocation is grown to cover ``committed + lookahead`` positions; after it,
only ``commit_lens`` of them hold committed tokens.  The rejected positions' slots stay reserved
and are the first slots the next block overwrites, so a request never holds more than
``committed + lookahead`` slots, and SGLang frees them all when the request finishes.

``committed`` is the scheduler's count.  Without overlap it is exact, and one block of lookahead
covers the step.  With SGLang's overlap scheduler the next step is prepared while the current
one runs, so the count lags by one step's commit (up to B tokens): the step's block then starts
up to B positions later, and the lookahead is two blocks (SGLang reserves the same for its own
spec-v2 workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from sglang.srt.mem_cache.allocation import alloc_for_spec_decode
from sglang.srt.speculative.spec_info import SpecInput, SpecInputType
from sglang.srt.utils.common import is_pin_memory_available


def reservation_lengths(committed: List[int], allocated: List[int], lookahead: int) -> List[int]:
    """Allocation target per request: never shrinks, always covers the next block."""
    return [max(a, c + lookahead) for c, a in zip(committed, allocated)]


@dataclass
class DraftState(SpecInput):
    """What one step hands the next: each request's bonus token (verified, not yet in the KV).

    Under the overlap scheduler the step's outputs stay on the device: SGLang parks
    ``bonus_tokens`` (and the new sequence lengths the worker publishes) in its FutureMap rows
    ``future_indices`` and gathers them back into the next step's state just before its forward.
    Until then this object only tracks which rows belong to which request."""

    bonus_tokens: torch.Tensor  # [bs] int64
    lookahead: int = 0
    future_indices: Optional[torch.Tensor] = None  # set by the overlap scheduler after the forward

    # The FutureMap's relay reads EAGLE's extras from any spec-v2 draft input; DFLASH has none.
    topk_p = topk_index = hidden_states = None

    def __post_init__(self) -> None:
        super().__init__(spec_input_type=SpecInputType.DFLASH_DRAFT)
        self.num_tokens_per_req = 1
        self.num_tokens_for_logprob_per_req = 1

    def prepare_for_decode(self, batch) -> None:
        """Reserve KV slots for the coming block (called by the scheduler before each decode)."""
        reqs = batch.reqs
        if not reqs:
            return
        committed = [int(r.kv_committed_len) for r in reqs]
        allocated = [int(r.kv.kv_allocated_len) for r in reqs]
        target = reservation_lengths(committed, allocated, self.lookahead)
        # Pinned, non-blocking copies: under overlap a blocking copy on the scheduler's stream would
        # wait for the step still running on the device, and the host would stop preparing.
        pin = is_pin_memory_available(batch.device)
        cur_cpu = torch.tensor(allocated, dtype=torch.int64, pin_memory=pin)
        nxt_cpu = torch.tensor(target, dtype=torch.int64, pin_memory=pin)
        alloc_for_spec_decode(
            batch.tree_cache,
            batch.req_to_token_pool,
            reqs=reqs,
            req_pool_indices=batch.req_pool_indices,
            cur_kv_lens=cur_cpu.to(batch.device, non_blocking=True),
            cur_kv_lens_cpu=cur_cpu,
            nxt_kv_lens=nxt_cpu.to(batch.device, non_blocking=True),
            nxt_kv_lens_cpu=nxt_cpu,
            num_needed_tokens=int((nxt_cpu - cur_cpu).sum()),
            batch=batch,
        )
        batch.seq_lens_cpu = torch.tensor(committed, dtype=torch.int64)
        batch.seq_lens_sum = sum(committed)

    def filter_batch(self, new_indices: torch.Tensor, new_indices_cpu: Optional[List[int]] = None) -> None:
        if self.future_indices is not None:
            # The bonus tokens may still be in flight on the forward stream: the next step
            # gathers them by row, so only the rows are kept.
            self.future_indices = self.future_indices[new_indices]
        else:
            self.bonus_tokens = self.bonus_tokens[new_indices]

    def merge_batch(self, other: "DraftState") -> None:
        if (self.future_indices is None) != (other.future_indices is None):
            raise RuntimeError("DFLASH: merging a batch run by the overlap scheduler with one that was not")
        if self.future_indices is not None:
            self.future_indices = torch.cat([self.future_indices, other.future_indices])
        else:
            self.bonus_tokens = torch.cat([self.bonus_tokens, other.bonus_tokens])


def translate_window_in_place(indices: torch.Tensor, used: torch.Tensor, bound: int, translate) -> None:
    """Maps the first ``used`` (a device scalar) of ``indices`` through ``translate`` in place.

    Sliding-window layers of an SWA pool (Gemma-4) keep their KV in slots of their own, so the
    window's KV indices, written as full-pool slots, are translated before attention reads them.
    SGLang slices ``indices[:used]`` for that, and slicing at a device count waits for the device:
    in a verify's CUDA-graph planning that wait stalled the host each step until the draft had run.
    Here the first ``bound`` entries (a host-known upper bound of ``used``) go through ``translate``
    and only the used ones are kept; the rest stay as they were and are never read."""
    head = indices[:bound]
    live = torch.arange(head.numel(), device=head.device) < used
    head.copy_(torch.where(live, translate(torch.where(live, head, 0)), head))
