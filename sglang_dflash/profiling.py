"""Per-phase timing of our decode step, for benchmarks (SGLANG_DFLASH_PROFILE=1).

On a GPU the phases are bracketed with CUDA events, read only once the device has passed a step's
last one (no host sync: under the overlap scheduler the step just launched may still be running).
Every ``every`` steps of one batch size, one log line gives their mean milliseconds per phase, the
whole step on the device, and the cycle: host wall time from one step's start to the next one's
(so cycle - step = scheduler and host time not hidden).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import time
from collections import defaultdict, deque
from typing import Optional

import torch

logger = logging.getLogger("sglang_dflash")


class StepProfiler:
    """SGLANG_DFLASH_TORCH_PROFILE=DIR: a torch.profiler table of decode steps 20..29, written to
    DIR/sglang_dflash_profile.txt (where a cycle's device and host time go, op by op) and its
    timeline to DIR/sglang_dflash_trace.json.gz (chrome://tracing / Perfetto).
    SGLANG_DFLASH_TORCH_PROFILE_BS=N counts only steps of N requests: a benchmark reaches its
    largest batch after hundreds of smaller steps, and that batch is the one whose cost is in
    question."""

    def __init__(self, out_dir: str, first: int = 20, count: int = 10, bs: Optional[int] = None) -> None:
        self.out_dir, self.first, self.last = out_dir, first, first + count
        self.bs = bs
        self.step = 0
        self.prof = None

    @classmethod
    def from_env(cls) -> Optional["StepProfiler"]:
        out = os.environ.get("SGLANG_DFLASH_TORCH_PROFILE")
        bs = os.environ.get("SGLANG_DFLASH_TORCH_PROFILE_BS")
        return cls(out, bs=int(bs) if bs else None) if out else None

    def counts(self, bs: int) -> bool:
        """Whether a step of ``bs`` requests is one of the steps counted towards the window (once
        the profile runs, every step is in it until the window's last counted one ends)."""
        return self.bs is None or bs == self.bs

    def before_step(self, bs: int) -> None:
        if self.step == self.first and self.prof is None and self.counts(bs):
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()

    def after_step(self, bs: int) -> None:
        if not self.counts(bs):
            return
        self.step += 1
        if self.prof is not None and self.step == self.last:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            table = self.prof.key_averages().table(sort_by="self_cuda_time_total" if torch.cuda.is_available()
                                                   else "self_cpu_time_total", row_limit=60)
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, "sglang_dflash_profile.txt"), "w") as f:
                f.write(f"decode steps {self.first}..{self.last - 1}{'' if self.bs is None else f' of {self.bs} requests'}"
                        f"\n{table}\n")
            # the timeline shows where the device waits on the host, which the table cannot
            trace = os.path.join(self.out_dir, "sglang_dflash_trace.json")
            self.prof.export_chrome_trace(trace)
            with open(trace, "rb") as src, gzip.open(trace + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(trace)
            logger.info("sglang-dflash: profile of decode steps %d..%d written to %s", self.first, self.last - 1,
                        self.out_dir)
            self.prof = None


class PhaseTimer:
    """Means are kept per batch size: a round's last steps run fewer requests and are cheaper, and
    mixing them in hid what a full batch costs (at 32 requests the mixed mean was ~10 ms short)."""

    def __init__(self, device, every: int = 20) -> None:
        self.cuda = str(device).startswith("cuda")
        self.every = every
        self.sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.steps: dict[int, int] = defaultdict(int)
        self.cycle_sums: dict[int, float] = defaultdict(float)
        self.cycles: dict[int, int] = defaultdict(int)
        self.pending: deque[tuple[int, list[tuple[str, object]]]] = deque()  # launched steps, oldest first
        self.current: list[tuple[str, object]] = []
        self.bs = 0
        self.last_start: Optional[tuple[float, int]] = None  # host time and batch size of the last step

    @classmethod
    def from_env(cls, device) -> Optional["PhaseTimer"]:
        return cls(device) if os.environ.get("SGLANG_DFLASH_PROFILE") == "1" else None

    def _stamp(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self, bs: int) -> None:
        now = time.perf_counter()
        # A cycle counts only between two steps of one batch size: across a change it would
        # charge one size with the other's step.
        if self.last_start is not None and self.last_start[1] == bs:
            self.cycle_sums[bs] += now - self.last_start[0]
            self.cycles[bs] += 1
        self.last_start = (now, bs)
        self.bs = bs
        self.current = [("start", self._stamp())]

    def mark(self, phase: str) -> None:
        self.current.append((phase, self._stamp()))

    def end(self) -> None:
        self.pending.append((self.bs, self.current))
        self.current = []
        while self.pending and self._done(self.pending[0][1]):
            self._resolve(*self.pending.popleft())

    def _done(self, stamps: list[tuple[str, object]]) -> bool:
        return not self.cuda or stamps[-1][1].query()

    def idle(self) -> None:
        """A step that is not a decode step breaks the cycle measurement."""
        self.last_start = None

    def _resolve(self, bs: int, stamps: list[tuple[str, object]]) -> None:
        sums = self.sums[bs]
        for (_, a), (name, b) in zip(stamps, stamps[1:]):
            sums[name] += a.elapsed_time(b) if self.cuda else (b - a) * 1e3
        total = stamps[0][1].elapsed_time(stamps[-1][1]) if self.cuda else (stamps[-1][1] - stamps[0][1]) * 1e3
        sums["step"] += total
        self.steps[bs] += 1
        if self.steps[bs] == self.every:
            n = self.every
            parts = ", ".join(f"{k} {v / n:.3f}" for k, v in sums.items())
            cycle = f"{self.cycle_sums[bs] * 1e3 / self.cycles[bs]:.3f}" if self.cycles[bs] else "-"
            logger.info("sglang-dflash phases bs %d (ms/step, mean of %d): %s, cycle %s", bs, n, parts, cycle)
            for per_bs in (self.sums, self.steps, self.cycle_sums, self.cycles):
                per_bs.pop(bs, None)
