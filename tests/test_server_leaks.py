"""200 requests, some cut off by disconnecting clients and some aborted by id, leave no KV slot
behind: SGLang's own idle-time pool accounting (strict: a leak stops the scheduler) stays clean."""

import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import cpu_server_args, dflash_args, free_port, server, tiny_models
from test_server_acceptance import ORACLE_ENV
from workload import generate

pytestmark = pytest.mark.slow


def one_request(url: str, i: int) -> str:
    rng = random.Random(i)
    ids = [rng.randrange(3, 1800) for _ in range(rng.randrange(3, 120))]
    params = {"temperature": 0, "max_new_tokens": rng.randrange(4, 48), "ignore_eos": rng.random() < 0.7}
    if i % 3 == 0:  # the sampled path too (sglang_dflash/sampling.py)
        params.update(temperature=0.8, top_p=0.9, repetition_penalty=1.1)
    kind = i % 5
    if kind == 0:  # client disconnects mid-stream
        with requests.post(url + "/generate", json={"input_ids": ids, "sampling_params": params, "stream": True},
                           stream=True, timeout=300) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n >= 2:
                    break
        return "disconnected"
    if kind == 1:  # aborted by id while it runs
        rid = uuid.uuid4().hex
        params["max_new_tokens"] = 200
        t = threading.Thread(target=lambda: requests.post(
            url + "/generate", json={"input_ids": ids, "sampling_params": params, "rid": rid}, timeout=300))
        t.start()
        time.sleep(rng.random() * 0.5)
        requests.post(url + "/abort_request", json={"rid": rid}, timeout=60)
        t.join()
        return "aborted"
    r = requests.post(url + "/generate", json={"input_ids": ids, "sampling_params": params}, timeout=300)
    r.raise_for_status()
    return "ok"


def test_no_kv_leak_after_200_requests(tmp_path):
    models = tiny_models()
    args = cpu_server_args(os.path.join(models, "qwen3-pi"), free_port()) + dflash_args(
        os.path.join(models, "qwen3-pi-oracle")) + ["--page-size", "2"]
    # Page size 2: SGLang's paged allocator is a Triton kernel, run by Triton's interpreter on a CPU.
    with server(args, tmp_path / "dflash.log", env={**ORACLE_ENV, "TRITON_INTERPRET": "1"}) as srv:
        before = generate(srv.url, [7, 8, 9], 40)["output_ids"]
        refused = [  # not yet servable losslessly: a clear HTTP 400, the server carries on
            {"input_ids": [7, 8, 9], "sampling_params": {"max_new_tokens": 8}, "return_sampling_mask": True},
        ]
        for body in refused:
            r = requests.post(srv.url + "/generate", json=body, timeout=120)
            assert r.status_code == 400 and "DFLASH (sglang-dflash) cannot serve this request" in r.text, r.text
        with ThreadPoolExecutor(4) as pool:
            kinds = list(pool.map(lambda i: one_request(srv.url, i), range(200)))
        assert kinds.count("ok") == 120 and kinds.count("aborted") == 40
        time.sleep(5)  # let the scheduler go idle: it checks every pool's accounting there
        assert srv.alive()
        assert requests.get(srv.url + "/health", timeout=30).status_code == 200
        assert generate(srv.url, [7, 8, 9], 40)["output_ids"] == before
        requests.post(srv.url + "/flush_cache", timeout=60)
        time.sleep(2)
        log = srv.log()
    assert "memory leak" not in log and "leak detected" not in log
    assert "Traceback" not in log
