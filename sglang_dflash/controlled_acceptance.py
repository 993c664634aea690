"""Benchmark-only: controlled acceptance on random (dummy) weights.

With dummy weights the draft is never right, so a benchmark would only ever see 1 token per step.
This mode keeps the real draft forward (its cost stays real) but replaces its proposals by the
target's own greedy continuation, recorded from a plain run with the same dummy weights, cut at a
position drawn so that the mean acceptance length matches a requested value.  The target still
verifies every block, so output stays the target's own.

Never active unless both variables are set; logged loudly when it is:
  SGLANG_DFLASH_BENCH_ACCEPT=8.59                     mean tokens per step to aim for
  SGLANG_DFLASH_BENCH_CONTINUATIONS=/path/cont.json   {"prompt ids joined by ,": [greedy output ids]}
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Optional

import torch

from sglang_dflash.step_commits import StepCommits

logger = logging.getLogger("sglang_dflash")


def expected_commit(p_wrong: float, width: int) -> float:
    """Mean tokens per step when each draft is independently wrong with probability p_wrong:
    accepted drafts ~ Geometric, capped at width - 1, plus the bonus token."""
    q = 1.0 - p_wrong
    return 1.0 + sum(q**k for k in range(1, width))


def solve_p_wrong(mean_commit: float, width: int) -> float:
    if not 1.0 <= mean_commit <= width + 1:
        raise ValueError(f"SGLANG_DFLASH_BENCH_ACCEPT={mean_commit} must lie in [1, {width + 1}] (the block size)")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_commit(mid, width) > mean_commit else (lo, mid)
    return (lo + hi) / 2


class ControlledAcceptance:
    """Draws each step's cut so that the *measured* mean commit length tracks ``mean_commit``.

    The replayed tokens are gathered on the device at each request's committed length
    (``seq_lens``), so they stay aligned when the host's view of the output lags a step behind
    (overlapped scheduling); only the cut positions are drawn on the host.

    The target's verify can reject a replayed token the recording had (bf16 numerics of a
    16-token verify are not those of single-token decoding), so measured acceptance falls short
    of the drawn one.  The controller compares what each step committed (read on the host from
    the request's output growth: no device sync) with what its draw should have committed under
    the verify width used, and scales the drawn mean by that efficiency.  A narrower verify
    (sglang_dflash/verify_width.py) cuts runs by design: it lowers both figures alike and leaves
    the drawn mean, the block's acceptance, where it was asked to be.
    """

    def __init__(self, mean_commit: float, continuations: dict[str, list[int]], width: int, seed: int = 0,
                 gain: float = 0.05) -> None:
        self.mean_commit = mean_commit
        self.width = width
        self.continuations = continuations
        self.rng = random.Random(seed)
        self.gain = gain
        self.drawn = mean_commit
        self.measured = self.expected = mean_commit  # running means of observed and drawn commits
        self._p_wrong: dict[float, float] = {}
        self.commits = StepCommits()  # each step's visible commit beside what its draw should give
        self.table: Optional[torch.Tensor] = None  # [rows, L] continuations on the device, -1 padded
        self.rows: dict[str, int] = {}  # prompt key -> table row
        self.req_rows: dict[str, int] = {}  # request id -> table row
        self.misses = self.steps = 0

    @classmethod
    def from_env(cls, width: int) -> Optional["ControlledAcceptance"]:
        accept, path = os.environ.get("SGLANG_DFLASH_BENCH_ACCEPT"), os.environ.get("SGLANG_DFLASH_BENCH_CONTINUATIONS")
        if not accept and not path:
            return None
        if not (accept and path):
            raise ValueError("controlled acceptance needs both SGLANG_DFLASH_BENCH_ACCEPT and SGLANG_DFLASH_BENCH_CONTINUATIONS")
        with open(path) as f:
            conts = json.load(f)
        mode = cls(float(accept), conts, width)
        logger.warning(
            "BENCHMARK-ONLY MODE: controlled acceptance is ON (mean %.2f tokens/step, %d recorded continuations). "
            "Draft proposals are replaced by recorded target output; never use this for serving.",
            mode.mean_commit, len(conts),
        )
        return mode

    def p_wrong(self) -> float:
        key = round(self.drawn, 2)
        if key not in self._p_wrong:
            self._p_wrong[key] = solve_p_wrong(key, self.width)
        return self._p_wrong[key]

    def _observe(self, committed: int, expected: int) -> None:
        self.measured += 0.01 * (committed - self.measured)
        self.expected += 0.01 * (expected - self.expected)
        target = self.mean_commit * self.expected / max(self.measured, 1.0)
        self.drawn = min(max(self.drawn * (target / self.drawn)**self.gain, 1.0), self.width + 1.0)

    def _row(self, req, device) -> int:
        """The request's continuation row in the device table (-1: no recording for its prompt)."""
        if self.table is None:  # every recording, once, -1 padded
            conts = list(self.continuations.values())
            self.table = torch.full((len(conts), max(map(len, conts), default=1)), -1, dtype=torch.int64)
            for r, cont in enumerate(conts):
                self.table[r, : len(cont)] = torch.tensor(cont, dtype=torch.int64)
            self.table = self.table.to(device)
            self.rows = {key: r for r, key in enumerate(self.continuations)}
        row = self.req_rows.get(req.rid)
        if row is None:  # keyed by the prompt once per request: joining it every step costs the host
            row = self.req_rows[req.rid] = self.rows.get(",".join(map(str, req.origin_input_ids)), -1)
        return row

    def override(self, reqs, drafts: torch.Tensor, verify_width: Optional[int] = None,
                 seq_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """drafts [bs, B-1] -> the recorded continuation, wrong from a drawn position on.
        ``seq_lens`` [bs] (device): committed lengths, where each block starts (default: the
        host's output lengths); ``verify_width``: positions the target verifies this step."""
        bs, width = drafts.shape
        verify_width = verify_width or width + 1
        rows, cuts, starts = [-1] * bs, [width] * bs, [0] * bs
        p_wrong = self.p_wrong()
        for i, req in enumerate(reqs):
            seen = self.commits.take(req)
            if seen is not None:
                self._observe(*seen)
            rows[i] = self._row(req, drafts.device)
            starts[i] = len(req.origin_input_ids) - 1  # draft j is output token seq_len - prompt + 1 + j
            if rows[i] < 0:
                self.misses += 1
                continue
            accepted = 0
            while accepted < width and self.rng.random() >= p_wrong:
                accepted += 1
            cuts[i] = accepted
            self.commits.push(req, min(accepted, verify_width - 1) + 1)
        self.steps += 1
        if self.steps % 500 == 0:
            logger.warning("BENCHMARK-ONLY controlled acceptance: target %.2f, measured %.2f, drawn %.2f, misses %d",
                           self.mean_commit, self.measured, self.drawn, self.misses)
            self.commits.forget_finished(reqs)
            live = {r.rid for r in reqs}
            self.req_rows = {k: v for k, v in self.req_rows.items() if k in live}
        if not self.continuations:
            return drafts
        dev = drafts.device
        rows, cuts, starts = (torch.tensor(v, dtype=torch.int64, pin_memory=drafts.is_cuda).to(dev, non_blocking=True)
                              for v in (rows, cuts, starts))
        if seq_lens is None:
            seq_lens = torch.tensor([len(r.origin_input_ids) + len(r.output_ids) - 1 for r in reqs], device=dev)
        cols = (seq_lens.to(torch.int64) - starts).unsqueeze(1) + torch.arange(width, device=dev)
        ok = (rows >= 0).unsqueeze(1) & (cols < self.table.shape[1])
        replay = self.table[rows.clamp(min=0).unsqueeze(1), cols.clamp(max=self.table.shape[1] - 1)]
        ok &= (replay >= 0).all(dim=1, keepdim=True)  # the whole block lies inside the recording
        # any token but the target's at the cut (vocabularies have even sizes)
        replay = replay ^ (torch.arange(width, device=dev) == cuts.unsqueeze(1)).to(replay.dtype)
        return torch.where(ok, replay.to(drafts.dtype), drafts)
