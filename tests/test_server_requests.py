"""Awkward requests through the HTTP server: the DFLASH server answers each exactly as the plain
server does (same tokens and finish reason, or the same HTTP error), and keeps serving.

Against the pi target with the mostly-right oracle draft, so verify steps commit long runs and
every stop condition below lands inside one: stop tokens and stop strings just before
max_new_tokens, and a stop string sitting after an EOS in the same run.
"""

import json
import os

import pytest
import requests

from helpers import cpu_server_args, dflash_args, free_port, server, tiny_models
from test_server_acceptance import ORACLE_ENV, pi_walk

pytestmark = pytest.mark.slow

CONTEXT = 256
OURS = "DFLASH (sglang-dflash) cannot serve this request"


def greedy(new, **kw):
    return {"temperature": 0, "max_new_tokens": new, **kw}


def ids(n, seed=0):
    return [3 + (seed * 131 + j * 17) % 1900 for j in range(n)]


def fixed_cases(models):
    """(name, body) pairs whose answers the two servers must agree on."""
    with open(os.path.join(models, "qwen3-pi", "pi.json")) as f:
        pi = json.load(f)["pi"]
    walk = pi_walk(pi, 6, 48)
    cases = [
        ("empty text", {"text": "", "sampling_params": greedy(8)}),
        ("empty ids", {"input_ids": [], "sampling_params": greedy(8)}),
        ("max_new_tokens 0", {"input_ids": ids(20), "sampling_params": greedy(0)}),
        ("max_new_tokens 1", {"input_ids": ids(20), "sampling_params": greedy(1, ignore_eos=True)}),
        ("max_new_tokens 2", {"input_ids": ids(20), "sampling_params": greedy(2, ignore_eos=True)}),
        ("fills the context", {"input_ids": ids(CONTEXT - 40), "sampling_params": greedy(40, ignore_eos=True)}),
        ("runs past the context", {"input_ids": ids(CONTEXT - 20), "sampling_params": greedy(60, ignore_eos=True)}),
        ("one short of the limit", {"input_ids": ids(CONTEXT - 1), "sampling_params": greedy(1, ignore_eos=True)}),
        ("at the limit", {"input_ids": ids(CONTEXT), "sampling_params": greedy(4)}),
        ("over the limit", {"input_ids": ids(CONTEXT + 50), "sampling_params": greedy(4)}),
    ]
    for name, bad in [("negative temperature", {"temperature": -1.0}), ("top_p 0", {"top_p": 0.0}),
                      ("top_p > 1", {"top_p": 1.5}), ("top_k 0", {"top_k": 0}), ("min_p > 1", {"min_p": 2.0}),
                      ("negative max_new_tokens", {"max_new_tokens": -1}),
                      ("repetition_penalty 0", {"repetition_penalty": 0.0})]:
        cases.append((name, {"input_ids": ids(10), "sampling_params": {**greedy(8), **bad}}))
    # A stop token m-2 tokens in, with max_new_tokens m: the run that reaches the limit holds it.
    for m in (5, 9, 14, 17, 23, 30):
        cases.append((f"stop token before max_new_tokens {m}",
                      {"input_ids": [4, 5, 6], "sampling_params": greedy(m, stop_token_ids=[walk[m - 3]])}))
    return cases


def stop_string_cases(url, tok):
    """Stop strings taken from the plain answer: just before max_new_tokens, and after an EOS."""
    cases = []
    full = requests.post(url + "/generate", json={"input_ids": [4, 5, 6], "sampling_params": greedy(48, ignore_eos=True)},
                         timeout=300).json()
    for m in (6, 11, 19, 27):
        head = tok.decode(full["output_ids"][:m - 1])
        before = tok.decode(full["output_ids"][:m - 2])
        stop = head[len(before):][:2] or head[-1:]
        cases.append((f"stop string before max_new_tokens {m}",
                      {"input_ids": [4, 5, 6], "sampling_params": greedy(m, stop=[stop])}))
    return cases


def after_eos_cases(models, tok):
    """The pi target emits EOS as the 23rd token after ``before_eos``; stop strings drawn from what
    would follow it.  One-token decoding stops at the EOS; so must a run holding both."""
    from test_server_acceptance import scenarios

    cases, pi, eos = scenarios(models)
    body = dict(cases)["eos"]
    start = body["input_ids"][-1]
    after = pi_walk(pi, start, 40)[23:]
    assert pi_walk(pi, start, 23)[-1] == eos
    out = []
    for k in range(1, 12, 2):
        text = tok.decode(after[k:k + 1])
        if text.strip() and text not in tok.decode(pi_walk(pi, start, 23)):
            out.append((f"stop string after EOS ({k})", {"input_ids": body["input_ids"], "sampling_params": greedy(40, stop=[text])}))
    return out


def answer(url, body):
    r = requests.post(url + "/generate", json=body, timeout=300)
    if r.status_code != 200:
        return ("HTTP", r.status_code)
    out = r.json()
    return (out["output_ids"], out["meta_info"]["finish_reason"], out.get("text"))


def unsupported(url, plain_url):
    """Options the worker may not serve yet: a clear HTTP 400 naming DFLASH, or the plain answer."""
    bodies = [
        {"input_ids": ids(12), "sampling_params": greedy(8), "return_logprob": True},
        {"input_ids": ids(12), "sampling_params": greedy(8, regex="(ab|cd)+")},
        {"input_ids": ids(12), "sampling_params": greedy(8, json_schema=json.dumps({"type": "object"}))},
        {"input_ids": ids(12), "sampling_params": {"temperature": 0.8, "max_new_tokens": 8}},
    ]
    verdicts = []
    for body in bodies:
        r = requests.post(url + "/generate", json=body, timeout=300)
        if r.status_code == 400:
            assert OURS in r.text, r.text
            verdicts.append("refused")
        else:
            assert r.status_code == 200, r.text
            if body["sampling_params"].get("temperature", 0) == 0:
                assert r.json()["output_ids"] == answer(plain_url, body)[0]
            verdicts.append("served")
    return verdicts


def test_awkward_requests_answered_like_plain(tmp_path):
    from transformers import AutoTokenizer

    models = tiny_models()
    target = os.path.join(models, "qwen3-pi")
    tok = AutoTokenizer.from_pretrained(target)
    cases = fixed_cases(models) + after_eos_cases(models, tok)
    extra = ["--context-length", str(CONTEXT)]
    with server(cpu_server_args(target, free_port()) + extra, tmp_path / "plain.log") as plain_srv, \
            server(cpu_server_args(target, free_port()) + extra + dflash_args(os.path.join(models, "qwen3-pi-oracle")),
                   tmp_path / "dflash.log", env=ORACLE_ENV) as srv:
        cases += stop_string_cases(plain_srv.url, tok)
        plain = {name: answer(plain_srv.url, body) for name, body in cases}
        spec = {name: answer(srv.url, body) for name, body in cases}
        verdicts = unsupported(srv.url, plain_srv.url)
        assert srv.alive() and answer(srv.url, cases[3][1]) == plain["max_new_tokens 1"]
        log = srv.log()
    for name, _ in cases:
        assert spec[name] == plain[name], name
    # The cases mean what they say: refusals are refusals, and stops landed where intended.
    refused = {n for n, a in plain.items() if a[0] == "HTTP"}
    assert {"at the limit", "over the limit", "negative temperature", "top_p 0", "top_p > 1",
            "negative max_new_tokens"} <= refused, refused
    assert all(a[0] == "HTTP" and a[1] == 400 for n, a in plain.items() if n in refused), plain
    assert plain["max_new_tokens 0"][0] == [] and len(plain["max_new_tokens 1"][0]) == 1
    stopped = [a for n, a in plain.items() if n.startswith("stop")]
    assert all(a[1]["type"] == "stop" for a in stopped), stopped
    assert sum(n.startswith("stop string after EOS") for n in plain) >= 2
    assert "Traceback" not in log and "memory leak" not in log
    assert len(verdicts) == 4
