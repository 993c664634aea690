"""The same greedy workload sent to a plain server and to a DFLASH server, through every API."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import requests

TIMEOUT = 600


def prompts(n: int = 8, vocab: int = 1900, long_every: int = 3) -> list[list[int]]:
    """Token-id prompts of varied length (tokenizers differ across Python versions; ids do not).
    Every ``long_every``-th prompt is long enough to be split by a small --chunked-prefill-size."""
    out = []
    for i in range(n):
        length = 150 + 7 * i if i % long_every == 0 else 5 + 9 * i
        out.append([3 + (i * 131 + j * 17 + (j * j) % 29) % (vocab - 3) for j in range(length)])
    return out


def generate(url: str, input_ids, max_new_tokens: int = 64, **sampling) -> list | dict:
    params = {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True, **sampling}
    r = requests.post(url + "/generate", json={"input_ids": input_ids, "sampling_params": params}, timeout=TIMEOUT)
    r.raise_for_status()
    return r.json()


def collect(url: str, ids: list[list[int]], max_new_tokens: int = 64) -> dict:
    """Outputs keyed by scenario; two servers must return identical dicts."""
    res: dict = {}
    res["one_at_a_time"] = [generate(url, p, max_new_tokens)["output_ids"] for p in ids]
    res["batch"] = [o["output_ids"] for o in generate(url, ids, max_new_tokens)]
    with ThreadPoolExecutor(4) as pool:
        res["concurrent"] = list(pool.map(lambda p: generate(url, p, max_new_tokens)["output_ids"], ids))
    comp = requests.post(url + "/v1/completions", json={
        "model": "default", "prompt": ids[:4], "max_tokens": max_new_tokens, "temperature": 0}, timeout=TIMEOUT)
    comp.raise_for_status()
    res["v1_completions"] = [c["text"] for c in sorted(comp.json()["choices"], key=lambda c: c["index"])]
    res["chat"], res["chat_stream"] = [], []
    for q in ("What is the capital of France?", "Write a haiku about speculative decoding."):
        body = {"model": "default", "messages": [{"role": "user", "content": q}], "max_tokens": max_new_tokens,
                "temperature": 0}
        r = requests.post(url + "/v1/chat/completions", json=body, timeout=TIMEOUT)
        r.raise_for_status()
        res["chat"].append(r.json()["choices"][0]["message"]["content"])
        res["chat_stream"].append(stream_chat(url, body))
    res["frontend"] = frontend_program(url)
    return res


def stream_chat(url: str, body: dict) -> str:
    text = []
    with requests.post(url + "/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=TIMEOUT) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            text.append(delta.get("content") or "")
    return "".join(text)


def frontend_program(url: str) -> list[dict]:
    """An SGLang frontend-language program (gen + select) through RuntimeEndpoint."""
    import sglang as sgl

    @sgl.function
    def qa(s, question):
        s += "Question: " + question + "\nAnswer:"
        s += sgl.gen("answer", max_tokens=32, temperature=0)
        s += "\nConfidence: " + sgl.select("confidence", choices=["high", "medium", "low"])

    backend = sgl.RuntimeEndpoint(url)
    states = qa.run_batch([{"question": q} for q in ("Why is the sky blue?", "Name a prime number.")],
                          backend=backend, num_threads=2)
    return [{"answer": st["answer"], "confidence": st["confidence"]} for st in states]


LOGPROB_KEYS = ("input_token_logprobs", "output_token_logprobs", "input_top_logprobs", "output_top_logprobs",
                "input_token_ids_logprobs", "output_token_ids_logprobs")


def logprob_request(url: str, input_ids: list[int], max_new_tokens: int = 24) -> dict:
    """Greedy generation returning the token and top-5 logprobs of the prompt (from position 3)
    and of every generated token."""
    r = requests.post(url + "/generate", json={
        "input_ids": input_ids, "return_logprob": True, "top_logprobs_num": 5, "logprob_start_len": 3,
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True}},
        timeout=TIMEOUT)
    r.raise_for_status()
    return r.json()


def split_numbers(x) -> tuple[list[float], list]:
    """A logprob structure as (its floats, everything else: shape, keys, token ids, None)."""
    floats, rest = [], []

    def walk(v):
        if isinstance(v, dict):
            for k in sorted(v):
                rest.append(k)
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            rest.append(len(v))
            for e in v:
                walk(e)
        elif isinstance(v, float):
            floats.append(v)
        else:
            rest.append(v)
    walk(x)
    return floats, rest


def logprob_error(a, b, relative_beyond_one: bool = False) -> float:
    """Largest difference between two logprob structures with the same shape and token ids
    (AssertionError otherwise); optionally relative for magnitudes above one."""
    fa, ra = split_numbers(a)
    fb, rb = split_numbers(b)
    assert ra == rb and len(fa) == len(fb), "logprob structures or token ids differ"
    scale = (lambda y: max(1.0, abs(y))) if relative_beyond_one else (lambda y: 1.0)
    return max([abs(x - y) / scale(y) for x, y in zip(fa, fb)], default=0.0)


def parting(ids: list[int], plain: dict, tol: float) -> Optional[int]:
    """Where greedy output ``ids`` parts from plain decoding's (``plain``: its logprob meta_info,
    top logprobs included), None if nowhere.  Runs whose numerics differ by up to ``tol`` may part
    only at a near-tie: plain decoding must rate the other run's token within ``tol`` of its own
    there (AssertionError otherwise).  From there on the texts differ and are not compared."""
    p_out = plain["output_token_logprobs"]
    cut = next((i for i, (a, b) in enumerate(zip(ids, p_out)) if a != b[1]), None)
    if cut is None:
        assert len(ids) == len(p_out), f"{len(ids)} tokens against plain's {len(p_out)}"
        return None
    rated = {tid: lp for lp, tid, *_ in plain["output_top_logprobs"][cut]}
    assert ids[cut] in rated and abs(rated[ids[cut]] - p_out[cut][0]) <= tol, (
        f"the runs part at output position {cut}: token {ids[cut]} against plain's {p_out[cut][1]}, "
        f"not a near-tie (plain's top logprobs there: {plain['output_top_logprobs'][cut]})")
    return cut


def greedy_logprob_error(spec: dict, plain: dict, tol: float) -> float:
    """``logprob_error`` over every LOGPROB_KEYS entry of two greedy requests' meta_info, where
    numerics that differ by up to ``tol`` (a 16-token verify against 1-token decoding on a GPU)
    may flip a near-tie (``parting``); outputs are compared up to where they part."""
    s_out, p_out = spec["output_token_logprobs"], plain["output_token_logprobs"]
    cut = parting([t[1] for t in s_out], plain, tol)
    cut = len(p_out) if cut is None else cut
    worst = 0.0
    for key in LOGPROB_KEYS:
        a, b = spec.get(key), plain.get(key)
        if key.startswith("output") and a is not None and b is not None:
            a, b = a[:cut], b[:cut]
        worst = max(worst, logprob_error(a, b))
    return worst

