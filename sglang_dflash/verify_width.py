"""Load-adaptive verify width: how many block positions the target verifies this step.

Verifying a prefix of the drafted block is always lossless: the acceptance rule only ever reads
the positions it verifies, and the bonus token comes from the target at the first rejection (or
after the last verified position).  What the width changes is cost and yield:

- cost: the verify forward reads every target weight once per step, so up to a "knee" it costs
  about the same whatever its width (memory-bound); past the knee each further token adds
  compute, one memory-bound step's worth per "span" tokens.  Measured on an H200 at
  gemma-4-31B-it shapes (BENCHMARKS.md): 19.8 ms at 128 tokens, 53 ms at 512, i.e. a knee of
  ~128 tokens and a span of ~230 (the roofline's 206 = peak FLOPs / bandwidth, in tokens), with
  the draft forward and bookkeeping ~0.26 of a memory-bound verify;
- yield: position k of a request's block is only worth verifying if drafts 1..k-1 were all
  accepted, which happens with probability ``q**(k-1)`` for a per-draft acceptance rate ``q``.

Policy (one width for the whole batch, so the verify stays one dense forward): pick the width W
maximising expected committed tokens per unit of time,

    sum_i E_i(W) / (draft_cost + 1 + max(0, bs * W - knee) / span),   E_i(W) = 1 + q_i + ... + q_i**(W-1),

where ``q_i`` is request i's recent per-draft acceptance rate, among the widths the verify can
run graphed for this batch (sglang_dflash/verify_graphs.py; any width where there are no graphs).
Below the knee the full block is free and is always chosen; above it, long accepted runs (high q)
keep the width up and poor drafts bring it down.  The draft still proposes the whole block (its
cost does not depend on W).
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Optional

from sglang_dflash.step_commits import StepCommits

logger = logging.getLogger("sglang_dflash")

WIDTH_ENV = "SGLANG_DFLASH_VERIFY_WIDTH"  # "auto", "full" (default) or a fixed width
KNEE_ENV = "SGLANG_DFLASH_VERIFY_KNEE"  # tokens at which the verify turns compute-bound
SPAN_ENV = "SGLANG_DFLASH_VERIFY_SPAN"  # tokens past the knee that cost one more memory-bound verify
DEFAULT_KNEE = 128
DEFAULT_SPAN = 224
DEFAULT_DRAFT_COST = 0.26
PRIOR_Q = 0.7  # a request with no history yet: neither optimistic nor hopeless


def expected_commit(q: float, width: int) -> float:
    """Expected tokens committed by a verify of ``width`` positions (drafts 1..width-1 plus the
    bonus) when each draft is accepted with probability q given the ones before it were."""
    return sum(q**k for k in range(width))


def choose_width(qs: Iterable[float], block_size: int, knee: int, draft_cost: float = DEFAULT_DRAFT_COST,
                 min_width: int = 2, span: Optional[int] = None, widths: Optional[Iterable[int]] = None) -> int:
    """The batch's verify width (see the module docstring) among ``widths`` (default: all from
    ``min_width`` to the block); ties go to the wider block.  ``span`` defaults to the knee."""
    qs = list(qs)
    bs = len(qs)
    if bs == 0 or bs * block_size <= knee:
        return block_size
    span = span or knee
    candidates = sorted(set(widths) | {block_size} if widths is not None else range(min_width, block_size + 1),
                        reverse=True)
    best, best_rate = block_size, -1.0
    for width in candidates:
        rate = sum(expected_commit(q, width) for q in qs) / (draft_cost + 1 + max(0, bs * width - knee) / span)
        if rate > best_rate + 1e-12:
            best, best_rate = width, rate
    return best


class AcceptanceTracker:
    """Per-request per-draft acceptance rate from what the scheduler committed (host only,
    ``StepCommits``: the growth of each request's output, paired with the width its step used).

    A step that verified W positions and committed c tokens accepted c-1 drafts; it also saw a
    rejection unless c == W (then the run was cut by the width, not by the draft: censored).
    The rate is the decayed ratio accepted / (accepted + rejections): the censoring-aware
    estimate for geometric runs."""

    def __init__(self, decay: float = 0.8) -> None:
        self.decay = decay
        self.commits = StepCommits()
        self.counts: dict = {}  # rid -> [decayed accepted drafts, decayed rejections]

    def rates(self, reqs) -> list[float]:
        """Takes in each request's commits since its last look; its current rate, batch order."""
        out = []
        for req in reqs:
            st = self.counts.setdefault(req.rid, [0.0, 0.0])
            seen = self.commits.take(req)
            if seen is not None:
                committed, width = seen
                st[0] = self.decay * st[0] + min(committed, width) - 1
                st[1] = self.decay * st[1] + (0 if committed >= width else 1)
            total = st[0] + st[1]
            out.append(PRIOR_Q if total == 0 else st[0] / total)
        return out

    def record(self, reqs, width: int) -> None:
        for req in reqs:
            self.commits.push(req, width)

    def forget_finished(self, reqs) -> None:
        self.commits.forget_finished(reqs)
        live = {r.rid for r in reqs}
        self.counts = {k: v for k, v in self.counts.items() if k in live}


class VerifyWidth:
    """The worker's per-step width decision (``SGLANG_DFLASH_VERIFY_WIDTH``: ``full``, the default,
    verifies whole blocks; ``auto`` is the policy above; an integer fixes the width).  On a GPU the
    narrower widths verify through CUDA graphs of their own (sglang_dflash/verify_graphs.py):
    eagerly, a narrower block's verify cost more than it saved (H200, 32 requests: 110 ms eager
    against 42 ms graphed, BENCHMARKS.md)."""

    def __init__(self, block_size: int, mode: str, knee: int, span: int = DEFAULT_SPAN, log: bool = True) -> None:
        self.block_size, self.mode, self.knee, self.span, self.log = block_size, mode, knee, span, log
        self.tracker = AcceptanceTracker()
        self.steps = 0
        self.width_sum = self.width_steps = 0  # for the periodic log line
        self.narrowed = False
        self._ran_logged = False

    @classmethod
    def from_env(cls, block_size: int, log: bool = True) -> Optional["VerifyWidth"]:
        mode = os.environ.get(WIDTH_ENV, "full").strip().lower()
        if mode == "full":
            return None
        if mode != "auto":
            try:
                width = int(mode)
            except ValueError:
                raise ValueError(f"{WIDTH_ENV}={mode!r}: expected 'auto', 'full' or a width") from None
            if not 2 <= width <= block_size:
                raise ValueError(f"{WIDTH_ENV}={width}: a fixed width must lie in [2, {block_size}]")
        knee = int(os.environ.get(KNEE_ENV, DEFAULT_KNEE))
        return cls(block_size, mode, knee, int(os.environ.get(SPAN_ENV, DEFAULT_SPAN)), log)

    def choose(self, reqs, widths: Optional[list[int]] = None) -> int:
        """This step's width; ``widths``: those the verify can run graphed for this batch (None: any)."""
        rates = self.tracker.rates(reqs)
        if self.mode == "auto":
            width = choose_width(rates, self.block_size, self.knee, span=self.span, widths=widths)
        else:
            width = int(self.mode)
        self.tracker.record(reqs, width)
        self.steps += 1
        if self.steps % 512 == 0:
            self.tracker.forget_finished(reqs)
        if self.log:
            self._log(width, len(reqs))
        return width

    def ran(self, width: int, bs: int, graphed: bool) -> None:
        """Logs how the first narrowed verify ran (graphed or eager), once."""
        if width < self.block_size and self.log and not self._ran_logged:
            self._ran_logged = True
            logger.info("sglang-dflash verify width: first narrowed verify, %d positions x %d requests, cuda graph: %s",
                        width, bs, graphed)

    def _log(self, width: int, bs: int) -> None:
        if width < self.block_size and not self.narrowed:
            logger.info("sglang-dflash verify width: first narrowed block, %d of %d positions for a batch of %d (%s)",
                        width, self.block_size, bs, self.mode)
        self.narrowed |= width < self.block_size
        self.width_sum, self.width_steps = self.width_sum + width, self.width_steps + 1
        if self.width_steps == 200:
            logger.info("sglang-dflash verify width: mean %.2f of %d over the last 200 steps (%s)",
                        self.width_sum / 200, self.block_size, self.mode)
            self.width_sum = self.width_steps = 0
