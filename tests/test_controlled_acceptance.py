"""The benchmark-only controlled acceptance draws cut positions whose mean matches the request."""

import json
from types import SimpleNamespace

import pytest
import torch

from sglang_dflash.acceptance import greedy_accept
from sglang_dflash.controlled_acceptance import ControlledAcceptance, expected_commit, solve_p_wrong


@pytest.mark.parametrize("mean", [1.0, 4.23, 8.59, 15.0])
def test_solver_hits_the_mean(mean):
    assert expected_commit(solve_p_wrong(mean, 15), 15) == pytest.approx(mean, abs=1e-6)


def replay(mode, cont, width, steps, veto=0.0, seed=0, verify_width=None, lag=0):
    """Decode ``steps`` steps of one request whose target emits ``cont``; with probability
    ``veto`` per drafted token the verify rejects a correct replayed token (numerics).  The
    target verifies the first ``verify_width`` positions of the block (default: all).  ``lag``:
    steps by which the host's view of the output trails the device (overlapped scheduling)."""
    verify_width = verify_width or width + 1
    rng = torch.Generator().manual_seed(seed)
    output = [cont[0]]
    history = [1]  # output length after each step
    req = SimpleNamespace(rid="r0", origin_input_ids=[1, 2, 3], output_ids=list(output))
    commits = []
    for _ in range(steps):
        done = len(output)
        req.output_ids = output[: history[max(len(history) - 1 - lag, 0)]]
        seq_lens = torch.tensor([len(req.origin_input_ids) + done - 1])
        drafts = mode.override([req], torch.full((1, width), -1), verify_width, seq_lens)[:, : verify_width - 1]
        vetoed = torch.rand((1, width), generator=rng)[:, : verify_width - 1] < veto
        drafts = torch.where(vetoed, drafts ^ 1, drafts)
        block = torch.cat([torch.tensor([[cont[done - 1]]]), drafts], dim=1)
        top1 = torch.tensor([cont[done : done + verify_width]])  # what the target emits
        acc = greedy_accept(block, top1)
        commits.append(int(acc.commit_lens))
        output += acc.out_tokens[0, : int(acc.commit_lens)].tolist()
        history.append(len(output))
    assert output == cont[: len(output)]  # still the target's own continuation
    return commits


@pytest.mark.parametrize("veto,lag", [(0.0, 0), (0.02, 0), (0.02, 1)])
def test_replayed_drafts_give_the_requested_mean_acceptance(veto, lag):
    width, steps = 15, 6000
    cont = list(range(100, 100 + steps * (width + 1) + 64))
    mode = ControlledAcceptance(8.59, {"1,2,3": cont}, width, seed=1)
    commits = replay(mode, cont, width, steps, veto, lag=lag)
    # the controller settles within the first ~1000 steps
    assert sum(commits[1000:]) / (steps - 1000) == pytest.approx(8.59, rel=0.04)
    if veto:
        assert mode.drawn > 9.0  # it had to draw longer runs than it measures


def test_a_narrower_verify_keeps_the_blocks_acceptance():
    """Verifying 8 of 16 positions cuts runs by design: the block's drawn acceptance stays at the
    requested 8.59 and the measured commits are what that draw gives under the cut."""
    width, steps = 15, 6000
    cont = list(range(100, 100 + steps * (width + 1) + 64))
    mode = ControlledAcceptance(8.59, {"1,2,3": cont}, width, seed=2)
    commits = replay(mode, cont, width, steps, verify_width=8)
    assert mode.drawn == pytest.approx(8.59, rel=0.03)
    cut = expected_commit(solve_p_wrong(8.59, width), 8)  # 1 + E[min(accepted drafts, 7)]
    assert sum(commits[1000:]) / (steps - 1000) == pytest.approx(cut, rel=0.04)


def test_unknown_prompt_keeps_the_real_drafts():
    mode = ControlledAcceptance(4.0, {}, 3)
    drafts = torch.tensor([[7, 8, 9]])
    req = SimpleNamespace(rid="a", origin_input_ids=[5], output_ids=[1])
    assert mode.override([req], drafts).tolist() == [[7, 8, 9]] and mode.misses == 1


def test_needs_both_variables(monkeypatch, tmp_path):
    assert ControlledAcceptance.from_env(15) is None
    monkeypatch.setenv("SGLANG_DFLASH_BENCH_ACCEPT", "3")
    with pytest.raises(ValueError, match="needs both"):
        ControlledAcceptance.from_env(15)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"1": [2, 3]}))
    monkeypatch.setenv("SGLANG_DFLASH_BENCH_CONTINUATIONS", str(path))
    assert ControlledAcceptance.from_env(15).mean_commit == 3.0


@pytest.mark.slow
def test_controlled_acceptance_through_the_server(tmp_path):
    """The benchmark mode end to end (tiny Qwen3 pair, random draft): recorded plain continuations
    replayed at a requested 6 tokens per step; the output is still plain decoding's and the
    measured acceptance is near the request (it would be ~1 with the random draft alone)."""
    import os

    from helpers import cpu_server_args, dflash_args, free_port, server, tiny_models
    from workload import generate, prompts

    models = tiny_models()
    ids = prompts(4)
    target = os.path.join(models, "qwen3")
    with server(cpu_server_args(target, free_port()), tmp_path / "plain.log") as srv:
        plain = [o["output_ids"] for o in generate(srv.url, ids, 96)]
        recorded = generate(srv.url, ids, 96 + 16)
    conts = tmp_path / "continuations.json"
    conts.write_text(json.dumps({",".join(map(str, p)): o["output_ids"] for p, o in zip(ids, recorded)}))
    env = {"SGLANG_DFLASH_BENCH_ACCEPT": "6", "SGLANG_DFLASH_BENCH_CONTINUATIONS": str(conts)}
    args = cpu_server_args(target, free_port()) + dflash_args(os.path.join(models, "qwen3-dflash"))
    with server(args, tmp_path / "dflash.log", env=env) as srv:
        out = generate(srv.url, ids, 96)
        assert "BENCHMARK-ONLY MODE: controlled acceptance is ON" in srv.log()
    assert [o["output_ids"] for o in out] == plain
    steps = sum(o["meta_info"]["spec_verify_ct"] for o in out)
    assert 4.5 <= sum(len(o["output_ids"]) for o in out) / steps <= 7.5
