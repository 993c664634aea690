"""Load-adaptive verify width (sglang_dflash/verify_width.py): the policy against its cost model,
the censoring-aware acceptance estimate, and through the real server the output still the
target's own when the verify covers only part of the block."""

import os
import re
from types import SimpleNamespace

import pytest

from helpers import cpu_server_args, dflash_args, free_port, server, tiny_models
from sglang_dflash.verify_graphs import graph_widths, narrowing_batch_sizes
from sglang_dflash.verify_width import AcceptanceTracker, VerifyWidth, choose_width, expected_commit
from test_server_acceptance import ORACLE_ENV, run, scenarios


def test_expected_commit():
    assert expected_commit(0.0, 16) == 1.0
    assert expected_commit(1.0, 16) == 16.0
    assert expected_commit(0.5, 3) == pytest.approx(1.75)


def test_below_the_knee_the_whole_block_is_verified():
    assert choose_width([0.0] * 12, 16, knee=192) == 16  # 192 tokens: still memory-bound
    assert choose_width([], 16, knee=192) == 16


def test_above_the_knee_width_follows_acceptance():
    knee = 192
    assert choose_width([1.0] * 32, 16, knee) == 16  # every position is accepted: verify them all
    assert choose_width([0.0] * 32, 16, knee) == 6  # nothing is: the widest block still at the knee
    widths = [choose_width([q] * 32, 16, knee) for q in (0.3, 0.6, 0.8, 0.9, 0.95, 0.99)]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_choice_maximises_the_modelled_rate():
    qs = [0.2, 0.9, 0.95, 0.5] * 8
    knee, cost = 128, 0.15

    def rate(w):
        return sum(expected_commit(q, w) for q in qs) / (cost + max(knee, len(qs) * w) / knee)

    best = choose_width(qs, 16, knee, cost)
    assert all(rate(best) >= rate(w) - 1e-9 for w in range(2, 17))


def test_span_prices_tokens_past_the_knee():
    """The H200-measured model (knee 128, span 224, draft 0.26 of a memory-bound verify): at 32
    requests drafting 8.59 tokens per block (q = 0.909), about half the block is worth verifying,
    and a longer span (cheaper tokens past the knee) keeps the block wider."""
    qs = [0.909] * 32
    assert choose_width(qs, 16, 128, 0.26, span=224) == 9
    assert choose_width(qs, 16, 128, 0.26, span=224) < choose_width(qs, 16, 128, 0.26, span=448) < 16


def test_choice_is_among_the_graphed_widths():
    qs = [0.909] * 32
    assert choose_width(qs, 16, 128, 0.26, span=224, widths=[6, 8, 10, 12]) == 8
    assert choose_width(qs, 16, 128, 0.26, span=224, widths=[12]) == 12
    assert choose_width(qs, 16, 128, 0.26, span=224, widths=[]) == 16  # only the full block is graphed
    assert choose_width([0.0] * 4, 16, 128, widths=[6]) == 16  # below the knee: the whole block


def test_graph_widths_and_sizes():
    assert graph_widths(16, "12, 6,8,6") == [6, 8, 12]
    assert graph_widths(16, "") == []
    for bad in ("16", "1", "eight"):
        with pytest.raises(ValueError, match="SGLANG_DFLASH_VERIFY_GRAPH_WIDTHS"):
            graph_widths(16, bad)
    # a narrower block can only pay where the full one is past the knee
    assert narrowing_batch_sizes([1, 2, 4, 8, 12, 16, 24, 32], 16, 128) == [12, 16, 24, 32]


def test_tracker_counts_a_run_cut_by_the_width_as_no_rejection():
    req = SimpleNamespace(rid="r", output_ids=[1])
    tr = AcceptanceTracker(decay=1.0)
    assert tr.rates([req]) == [pytest.approx(0.7)]  # the prior before any step
    tr.record([req], 4)
    req.output_ids += [0] * 4  # committed the whole width: 3 accepted, no rejection seen
    assert tr.rates([req]) == [1.0]
    tr.record([req], 4)
    req.output_ids += [0] * 2  # 1 accepted, then a rejection
    assert tr.rates([req]) == [pytest.approx(4 / 5)]


def test_tracker_pairs_each_commit_with_its_steps_width_when_the_host_lags():
    """Overlapped scheduling: a step's commit shows up one step after the next width is chosen."""
    req = SimpleNamespace(rid="r", output_ids=[1])
    tr = AcceptanceTracker(decay=1.0)
    tr.rates([req]); tr.record([req], 16)  # step 1 (wide)
    tr.rates([req]); tr.record([req], 4)  # step 2 chosen before step 1's commit is visible
    req.output_ids += [0] * 6  # step 1: 5 accepted then a rejection (not a cut at 4)
    assert tr.rates([req]) == [pytest.approx(5 / 6)]
    req.output_ids += [0] * 4  # step 2: cut by its width 4, no rejection
    assert tr.rates([req]) == [pytest.approx(8 / 9)]


def test_env_values(monkeypatch):
    assert VerifyWidth.from_env(16) is None
    monkeypatch.setenv("SGLANG_DFLASH_VERIFY_WIDTH", "auto")
    assert VerifyWidth.from_env(16).mode == "auto"
    monkeypatch.setenv("SGLANG_DFLASH_VERIFY_WIDTH", "full")
    assert VerifyWidth.from_env(16) is None
    monkeypatch.setenv("SGLANG_DFLASH_VERIFY_WIDTH", "5")
    assert VerifyWidth.from_env(16).choose([]) == 5
    for bad in ("1", "17", "wide"):
        monkeypatch.setenv("SGLANG_DFLASH_VERIFY_WIDTH", bad)
        with pytest.raises(ValueError, match="SGLANG_DFLASH_VERIFY_WIDTH"):
            VerifyWidth.from_env(16)


@pytest.mark.slow
def test_partial_verify_is_lossless(tmp_path):
    """The mostly-right pair with a knee of 24 tokens: a lone request verifies its whole block,
    the 6-request batch only part of it; every output equals plain decoding's."""
    models = tiny_models()
    cases, _, _ = scenarios(models)
    cases = [c for c in cases if c[0] in ("long", "eos", "max_new_tokens")]
    target = os.path.join(models, "qwen3-pi")
    with server(cpu_server_args(target, free_port()), tmp_path / "plain.log") as srv:
        plain = run(srv.url, cases)
    env = {**ORACLE_ENV, "SGLANG_DFLASH_VERIFY_WIDTH": "auto", "SGLANG_DFLASH_VERIFY_KNEE": "24",
           "SGLANG_DFLASH_VERIFY_SPAN": "24"}
    spec_args = cpu_server_args(target, free_port()) + dflash_args(os.path.join(models, "qwen3-pi-oracle"))
    with server(spec_args, tmp_path / "dflash.log", env=env) as srv:
        spec = run(srv.url, cases)
        log = srv.log()
    for name in plain:
        assert [o["output_ids"] for o in spec[name]] == [o["output_ids"] for o in plain[name]], name
        assert [o["meta_info"]["finish_reason"] for o in spec[name]] == [
            o["meta_info"]["finish_reason"] for o in plain[name]], name
    narrowed = re.search(r"verify width: first narrowed block, (\d+) of 16 positions for a batch of (\d+)", log)
    assert narrowed and int(narrowed.group(2)) > 1, log[-3000:]
    long = spec["long"]
    steps = sum(o["meta_info"]["spec_verify_ct"] for o in long)
    assert sum(o["meta_info"]["completion_tokens"] for o in long) / steps >= 2.0
