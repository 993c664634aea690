"""The benchmark's steady-state window (scripts/bench_gemma.py): decode figures only while every
request of a concurrent round is decoding, and none when no such window exists."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

from bench_gemma import steady_state  # noqa: E402


def request(start: float, cycles: int = 5, per_cycle: int = 2) -> tuple[dict, list[tuple[float, int]]]:
    """A streamed request: the prefill's token at ``start``, then ``per_cycle`` tokens a second."""
    marks = [(start + i, 1 + per_cycle * i) for i in range(cycles + 1)]
    return {"meta_info": {"completion_tokens": marks[-1][1], "spec_verify_ct": cycles}}, marks


def test_window_is_where_every_request_decodes():
    # second request half a second late: the window is 0.5 .. 5.0 s
    row = steady_state([request(0.0), request(0.5)], concurrent=True)
    assert row["window_s"] == 4.5
    assert row["accept_len"] == 2.0  # 10 and 8 tokens in the window, 2 per cycle
    assert row["decode_tok_s"] == 4.0  # 18 tokens in 4.5 s
    assert row["step_ms"] == 1012.5  # mean of 4.5 s / 5 and 4.5 s / 4 cycles


def test_no_common_window_measures_nothing():
    # the second request starts after the first has finished: no full batch ever ran
    row = steady_state([request(0.0), request(6.0)], concurrent=True)
    assert row == dict(window_s=None, window_cycles=None, decode_tok_s=None, accept_len=None, step_ms=None)
    # one at a time, each request is its own window
    assert steady_state([request(0.0), request(6.0)], concurrent=False)["accept_len"] == 2.0
