"""A mostly-right draft (tests/oracle_models) against the predictable "pi" target: long accepted
runs, with stop conditions landing inside them, a shared-prefix batch hitting the radix cache,
and the output still token-for-token the target's own, under either scheduler."""

import json
import os

import pytest
import requests

from helpers import SCHEDULERS, check_scheduler, cpu_server_args, dflash_args, free_port, server, tiny_models
from workload import generate

pytestmark = pytest.mark.slow

ORACLE_ENV = {"SGLANG_EXTERNAL_MODEL_PACKAGE": "oracle_models"}


def pi_walk(pi, start, steps):
    out, t = [], start
    for _ in range(steps):
        t = pi[t]
        out.append(t)
    return out


def scenarios(models):
    """(name, request body) pairs built from the permutation the pi target follows."""
    with open(os.path.join(models, "qwen3-pi", "pi.json")) as f:
        pi = json.load(f)["pi"]
    with open(os.path.join(models, "qwen3-pi", "config.json")) as f:
        eos = json.load(f)["eos_token_id"]
    eos = eos[0] if isinstance(eos, list) else eos
    inv = {v: k for k, v in enumerate(pi)}
    before_eos = eos  # a prompt ending 23 steps of pi before EOS makes the target emit EOS 23rd
    for _ in range(23):
        before_eos = inv[before_eos]
    prefix = [5 + (7 * j) % 1500 for j in range(96)]
    cases = [
        ("long", {"input_ids": [[3 + 11 * i, 40 + i, 7] for i in range(6)],
                  "sampling_params": {"temperature": 0, "max_new_tokens": 96, "ignore_eos": True}}),
        ("eos", {"input_ids": [1, 2, before_eos], "sampling_params": {"temperature": 0, "max_new_tokens": 64}}),
        # EOS is allowed from the 20th token: it still ends the request at the 23rd, inside a run
        # that starts after several multi-token steps (counted right under the overlap scheduler too).
        ("min_new_tokens", {"input_ids": [1, 2, before_eos],
                            "sampling_params": {"temperature": 0, "max_new_tokens": 64, "min_new_tokens": 20}}),
        ("max_new_tokens", {"input_ids": [[9, 8, 77], [9, 8, 78]],
                            "sampling_params": {"temperature": 0, "max_new_tokens": 13, "ignore_eos": True}}),
        ("shared_prefix_first", {"input_ids": prefix + [11],
                                 "sampling_params": {"temperature": 0, "max_new_tokens": 40, "ignore_eos": True}}),
        ("shared_prefix_batch", {"input_ids": [prefix + [12 + i] for i in range(4)],
                                 "sampling_params": {"temperature": 0, "max_new_tokens": 40, "ignore_eos": True}}),
    ]
    return cases, pi, eos


def run(url, cases):
    out = {}
    for name, body in cases:
        r = requests.post(url + "/generate", json=body, timeout=600)
        r.raise_for_status()
        out[name] = r.json() if isinstance(r.json(), list) else [r.json()]
    # A stop string taken from the middle of a generation ends the request inside an accepted run.
    full = generate(url, [4, 5, 6], 48)["text"]
    stop = full[len(full) // 2: len(full) // 2 + 3]
    stopped = generate(url, [4, 5, 6], 48, stop=[stop])
    out["stop_string"] = [{**stopped, "output_ids": stopped["output_ids"], "stop": stop}]
    return out


def test_mostly_right_draft(tmp_path):
    models = tiny_models()
    cases, pi, eos = scenarios(models)
    target = os.path.join(models, "qwen3-pi")
    base = cpu_server_args(target, free_port())
    with server(base, tmp_path / "plain.log") as srv:
        plain = run(srv.url, cases)
    for scheduler in SCHEDULERS:
        spec_args = cpu_server_args(target, free_port()) + dflash_args(
            os.path.join(models, "qwen3-pi-oracle")) + SCHEDULERS[scheduler]
        with server(spec_args, tmp_path / f"dflash-{scheduler}.log", env=ORACLE_ENV) as srv:
            check_scheduler(requests.get(srv.url + "/get_server_info", timeout=30).json(), scheduler)
            check_mostly_right(plain, run(srv.url, cases), eos)


def check_mostly_right(plain, spec, eos):
    for name in plain:
        assert [o["output_ids"] for o in spec[name]] == [o["output_ids"] for o in plain[name]], name
        assert [o["meta_info"]["finish_reason"] for o in spec[name]] == [
            o["meta_info"]["finish_reason"] for o in plain[name]], name

    long = spec["long"]
    tokens = sum(o["meta_info"]["completion_tokens"] for o in long)
    steps = sum(o["meta_info"]["spec_verify_ct"] for o in long)
    assert tokens / steps >= 4.0, f"mean acceptance {tokens / steps:.2f} tokens per step"

    (eos_out,) = spec["eos"]
    assert eos_out["meta_info"]["finish_reason"]["type"] == "stop"
    assert eos_out["output_ids"][-1] == eos and len(eos_out["output_ids"]) == 23
    assert eos_out["meta_info"]["spec_verify_ct"] < 23  # EOS arrived inside a multi-token step

    (min_new,) = spec["min_new_tokens"]
    assert min_new["output_ids"] == eos_out["output_ids"] and min_new["meta_info"]["spec_verify_ct"] < 23

    for o in spec["max_new_tokens"]:
        assert o["meta_info"]["finish_reason"] == {"type": "length", "length": 13}
        assert len(o["output_ids"]) == 13 and o["meta_info"]["spec_verify_ct"] < 13

    (stopped,) = spec["stop_string"]
    assert stopped["meta_info"]["finish_reason"]["type"] == "stop"
    assert stopped["meta_info"]["finish_reason"]["matched"] == stopped["stop"]
    assert stopped["text"] == plain["stop_string"][0]["text"]
    assert len(stopped["output_ids"]) < 48

    assert all(o["meta_info"]["cached_tokens"] >= 96 for o in spec["shared_prefix_batch"])
