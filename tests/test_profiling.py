"""The benchmark's phase timer under the overlap scheduler: a step's CUDA events are read only once
the device has passed them (reading an unfinished event raises on a GPU), and steps are resolved
in launch order."""

import logging

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
            timer.start()
            timer.mark("draft")
            timer.mark("verify")
            FakeEvent.device_now += 5.0  # the device lags the host (overlap)
            timer.end()
        assert timer.steps == 1 and len(timer.pending) == 2  # only step 1 had finished (at 10)
        FakeEvent.device_now = 100.0
        timer.start()
        timer.end()
    line = next(r.getMessage() for r in caplog.records if "phases" in r.getMessage())
    # steps 1 and 2, in order: draft 3 and 4 ms, verify 7 and 6 ms, 10 ms each
    assert "draft 3.500" in line and "verify 6.500" in line and "step 10.000" in line
