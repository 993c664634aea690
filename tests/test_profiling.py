"""The benchmark's phase timer under the overlap scheduler: a step's CUDA events are read only once
the device has passed them (reading an unfinished event raises on a GPU), and steps are resolved
in launch order; means are per batch size, and scripts/bench_gemma.py reads the measured size's."""

import logging
import os
import sys
import time
from datetime import datetime

from sglang_dflash.profiling import PhaseTimer


class FakeEvent:
    """A CUDA event stand-in: recorded at a device time, finished once the device gets there."""

    device_now = 0.0

    def __init__(self, at: float) -> None:
        self.at = at

    def query(self) -> bool:
        return FakeEvent.device_now >= self.at

    def elapsed_time(self, later: "FakeEvent") -> float:
        assert self.query() and later.query(), "read before the device passed it"
        return later.at - self.at


def test_steps_resolve_only_when_the_device_has_passed_them(caplog):
    FakeEvent.device_now = 0.0
    timer = PhaseTimer("cpu", every=2)
    timer.cuda = True  # events, as on a GPU
    stamps = iter([0.0, 3.0, 10.0, 10.0, 14.0, 20.0, 20.0, 21.0, 30.0, 30.0])
    timer._stamp = lambda: FakeEvent(next(stamps))
    with caplog.at_level(logging.INFO, logger="sglang_dflash"):
        for _ in range(3):  # three launched steps: draft then verify, 10 ms each on the device
            timer.start(4)
            timer.mark("draft")
            timer.mark("verify")
            FakeEvent.device_now += 5.0  # the device lags the host (overlap)
            timer.end()
        assert timer.steps[4] == 1 and len(timer.pending) == 2  # only step 1 had finished (at 10)
        FakeEvent.device_now = 100.0
        timer.start(4)
        timer.end()
    line = next(r.getMessage() for r in caplog.records if "phases" in r.getMessage())
    # steps 1 and 2, in order: draft 3 and 4 ms, verify 7 and 6 ms, 10 ms each
    assert "draft 3.500" in line and "verify 6.500" in line and "step 10.000" in line


def test_means_and_cycles_are_per_batch_size(caplog, tmp_path, monkeypatch):
    """A round's tail (fewer requests, cheaper steps) gets lines of its own instead of pulling the
    full batch's means down, and a cycle across a batch-size change counts for neither size."""
    timer = PhaseTimer("cpu", every=2)
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    # (batch size, milliseconds of the step): the full batch, then the round's tail
    steps = [(32, 60.0), (32, 60.0), (32, 60.0), (5, 20.0), (5, 20.0), (5, 20.0)]
    with caplog.at_level(logging.INFO, logger="sglang_dflash"):
        for bs, ms in steps:
            timer.start(bs)
            clock[0] += ms / 1e3
            timer.mark("verify")
            timer.end()
            clock[0] += 1e-3  # host time between steps
    lines = [r.getMessage() for r in caplog.records if "phases" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("sglang-dflash phases bs 32 (ms/step, mean of 2)") and "verify 60.000" in lines[0]
    assert lines[0].endswith("cycle 61.000")
    assert lines[1].startswith("sglang-dflash phases bs 5 (ms/step, mean of 2)") and "verify 20.000" in lines[1]
    assert lines[1].endswith("cycle 21.000")  # the 32 -> 5 change (61 ms) is not a bs-5 cycle

    # The benchmark takes the measured concurrency's lines only.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    from bench_gemma import phases

    log = tmp_path / "server.log"
    log.write_text("".join(f"[2026-11-27 10:00:0{i}] {line}\n" for i, line in enumerate(lines)))
    t0 = datetime(2026, 11, 27, 10, 0, 0).timestamp()
    assert phases(str(log), t0, t0 + 2, 32) == {"verify": 60.0, "step": 60.0, "cycle": 61.0}
    assert phases(str(log), t0, t0 + 2, 5)["step"] == 20.0
    assert phases(str(log), t0, t0 + 2, 8) == {}


def test_torch_profile_window_counts_only_the_asked_batch_size(tmp_path):
    """SGLANG_DFLASH_TORCH_PROFILE_BS: the window opens at the asked size's N-th step, however many
    steps of other sizes came first, and closes after its count of that size's steps."""
    import torch

    from sglang_dflash.profiling import StepProfiler

    prof = StepProfiler(str(tmp_path), first=2, count=2, bs=32)
    x = torch.ones(64, 64)
    marks = []
    for i, bs in enumerate([1, 1, 1, 32, 8, 32, 1, 32, 32, 32, 32]):
        prof.before_step(bs)
        marks.append((i, prof.prof is not None))
        torch.mm(x, x)
        prof.after_step(bs)
    # steps 7 and 8 are the third and fourth of 32 requests: the window; the 1s and the 8 do not count
    assert [i for i, on in marks if on] == [7, 8]
    table = (tmp_path / "sglang_dflash_profile.txt").read_text()
    assert table.startswith("decode steps 2..3 of 32 requests") and "aten::mm" in table
    assert (tmp_path / "sglang_dflash_trace.json.gz").stat().st_size > 0
