#!/usr/bin/env python3
"""Soak: a random mixed workload against a DFLASH server for a given time, every greedy answer
compared with plain decoding of the same target.

  python scripts/soak.py --duration 1800 --out /tmp/soak                 # CPU, tiny models
  python scripts/soak.py --duration 600 --device cuda --configs /work/shared/design/configs \\
      --concurrency 32 --out $OUT                                        # gemma-4-31B-it shapes, dummy weights

It starts a plain server and a DFLASH server (or uses --plain-url / --dflash-url), then N client
threads send requests of random prompt length, max_new_tokens (0 and 1 included), stop strings or
stop token ids landing inside the output, streaming, clients that disconnect mid-stream, requests
aborted by id at a random moment, sampled requests (served within their max_new_tokens; their
law is tests/test_sampling_distribution.py's business), invalid sampling parameters and prompts
over the context limit (both servers must refuse them alike).  A finished greedy answer must
equal the plain server's; an aborted one must be a prefix of it.  Memory (RSS of the server's process group, KV tokens in use after a cache
flush) is read at the start and the end; the server log is scanned for SGLang's memory-check
errors and tracebacks.  Progress lines go to stderr, the final JSON report to stdout and --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from typing import Optional

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import cpu_engine_env, free_port, gpu_fp32_env, interrupt_on_sigterm, server  # noqa: E402

TIMEOUT = 900
LEAK_PATTERNS = ("memory leak detected", "leak detected")
ERROR_PATTERNS = ("Traceback (most recent call last)",)
RETRACT_PATTERN = "KV cache pool is full. Retract requests."


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- servers ---------------------------------------------------------------------------------
def cpu_args(model: str, port: int, context: int, max_total: int) -> list[str]:
    return ["--model-path", model, "--device", "cpu", "--attention-backend", "torch_native", "--dtype", "float32",
            "--mem-fraction-static", "0.05", "--max-total-tokens", str(max_total), "--context-length", str(context),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]


def gpu_args(model: str, port: int, context: int, max_total: Optional[int], conc: int, dtype: str) -> list[str]:
    args = ["--model-path", model, "--load-format", "dummy", "--skip-tokenizer-init", "--dtype", dtype,
            "--attention-backend", "triton", "--sampling-backend", "pytorch", "--grammar-backend", "none",
            "--cuda-graph-backend-prefill", "disabled", "--cuda-graph-max-bs-decode", str(conc),
            "--max-running-requests", str(conc), "--mem-fraction-static", "0.75", "--context-length", str(context),
            "--chunked-prefill-size", "2048", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    return args + (["--max-total-tokens", str(max_total)] if max_total else [])


def fewer_layers(configs: str, layers: int, out: str) -> str:
    """gemma-4-31B-it and its draft with the target cut to its first ``layers`` layers: every
    layer keeps its real shapes (sliding/global pattern, head dims, vocabulary), and the draft's
    target layer ids are scaled onto the shorter stack.  Lets a GPU soak run in float32, where
    greedy DFLASH must equal plain decoding token for token (bfloat16 rounding differs between a
    16-token verify and a 1-token decode, and random dummy weights leave argmax margins tiny)."""
    dst = os.path.join(out, f"configs_{layers}_layers")
    for name in ("gemma-4-31B-it", "gemma-4-31B-it-DFlash"):
        os.makedirs(os.path.join(dst, name), exist_ok=True)
        with open(os.path.join(configs, name, "config.json")) as f:
            cfg = json.load(f)
        if name.endswith("DFlash"):
            old = cfg["num_target_layers"]
            ids = cfg["dflash_config"]["target_layer_ids"]
            cfg["dflash_config"]["target_layer_ids"] = sorted({min(layers - 1, round(i * layers / old)) for i in ids})
            cfg["num_target_layers"] = layers
        else:
            text = cfg.get("text_config", cfg)
            text["num_hidden_layers"] = layers
            text["layer_types"] = text["layer_types"][:layers]
        with open(os.path.join(dst, name, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    return dst


def server_plan(a) -> tuple[list[str], list[str], dict, bool]:
    """(plain args, DFLASH args, env, has_tokenizer) for the chosen device."""
    if a.device == "cpu":
        from helpers import tiny_models

        models = a.models or tiny_models()
        target, draft = (("qwen3-pi", "qwen3-pi-oracle") if a.pair == "pi" else (a.pair, f"{a.pair}-dflash"))
        env = {**cpu_engine_env(), **({"SGLANG_EXTERNAL_MODEL_PACKAGE": "oracle_models"} if a.pair == "pi" else {})}
        base = lambda port: cpu_args(os.path.join(models, target), port, a.context_length, a.max_total_tokens)  # noqa: E731
        spec = ["--speculative-draft-model-path", os.path.join(models, draft)]
        has_tok = True
    else:
        if a.layers:
            a.configs = fewer_layers(a.configs, a.layers, a.out)
        target = os.path.join(a.configs, "gemma-4-31B-it")
        base = lambda port: gpu_args(target, port, a.context_length, a.max_total_tokens, a.concurrency, a.dtype)  # noqa: E731
        spec = ["--speculative-draft-model-path", os.path.join(a.configs, "gemma-4-31B-it-DFlash"),
                "--speculative-draft-load-format", "dummy", "--speculative-draft-attention-backend", a.draft_backend]
        env = {"SGLANG_SWA_EVICTION_INTERVAL": os.environ.get("SGLANG_SWA_EVICTION_INTERVAL", "8")}
        if a.dtype == "float32":
            env.update(gpu_fp32_env())
        has_tok = False
    spec = ["--speculative-algorithm", "DFLASH", "--speculative-num-draft-tokens", str(a.block)] + spec
    return base(free_port()), base(free_port()) + spec, env, has_tok


def group_rss_mb(pgid: Optional[int]) -> Optional[float]:
    """Resident memory of every process in the server's process group (launcher, scheduler, ...)."""
    if pgid is None:
        return None
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return round(total / 1024, 1)


def kv_tokens(url: str) -> dict:
    """KV pool tokens in use / total, read once the server is idle and its prefix cache flushed."""
    deadline = time.time() + 120
    while time.time() < deadline:
        load = requests.get(url + "/v1/loads", params={"include": "core"}, timeout=30).json()["loads"][0]
        if load.get("num_running_reqs", 0) == 0 and load.get("num_waiting_reqs", 0) == 0:
            break
        time.sleep(1)
    requests.post(url + "/flush_cache", timeout=60)
    time.sleep(2)
    load = requests.get(url + "/v1/loads", params={"include": "core"}, timeout=30).json()["loads"][0]
    used, capacity = load.get("num_used_tokens", 0), load.get("max_total_num_tokens")
    return {"used": used, "capacity": capacity, "free": capacity - used if capacity is not None else None}


# --- the workload ----------------------------------------------------------------------------
class Soak:
    def __init__(self, a, plain_url: str, dflash_url: str, has_tokenizer: bool, vocab: int) -> None:
        self.a, self.plain, self.dflash, self.has_tok, self.vocab = a, plain_url, dflash_url, has_tokenizer, vocab
        self.counts: Counter = Counter()
        self.mismatches: list[dict] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.plain_cache: dict[str, dict] = {}
        self.stop_at = 0.0
        self.dead = threading.Event()
        # Without a plain server running alongside (one GPU holds one big model), comparisons wait
        # until the DFLASH run is over and a plain server replays them.
        self.deferred: list[tuple] = []

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def error(self, what: str) -> None:
        with self.lock:
            self.counts["errors"] += 1
            if len(self.errors) < 50:
                self.errors.append(what[:500])
        log("ERROR " + what[:300])

    def mismatch(self, what: str, body: dict, got, want) -> None:
        with self.lock:
            self.counts["mismatches"] += 1
            if len(self.mismatches) < 20:
                entry = {"what": what, "body": body, "dflash": got, "plain": want}
                g, w = (x.get("output_ids") if isinstance(x, dict) else None for x in (got, want))
                if g is not None and w is not None:  # where the token streams part
                    entry["first_difference"] = next((i for i, (x, y) in enumerate(zip(g, w)) if x != y),
                                                     min(len(g), len(w)))
                self.mismatches.append(entry)
        log(f"MISMATCH {what}: {json.dumps(body)[:200]}")

    # requests ---------------------------------------------------------------------------------
    def prompt(self, rng: random.Random, text_ok: bool) -> dict:
        r = rng.random()
        n = rng.randrange(1, 16) if r < 0.35 else rng.randrange(16, 200) if r < 0.85 else rng.randrange(200, 600)
        n = min(n, self.a.context_length - 8)
        if text_ok and self.has_tok and rng.random() < 0.3:
            words = ["the", "block", "draft", "verify", "token", "cache", "speculative", "decode", "Paris", "42"]
            return {"text": " ".join(rng.choice(words) for _ in range(max(1, n // 2)))}
        return {"input_ids": [rng.randrange(3, self.vocab - 64) for _ in range(n)]}

    def plain_answer(self, body: dict, url: Optional[str] = None) -> dict:
        key = json.dumps(body, sort_keys=True)
        with self.lock:
            hit = self.plain_cache.get(key) if url is None else None
        if hit is not None:
            return hit
        r = requests.post((url or self.plain) + "/generate", json=body, timeout=TIMEOUT)
        out = {"status": r.status_code, "json": r.json() if r.status_code == 200 else None, "text": r.text[:300]}
        with self.lock:
            if len(self.plain_cache) < 5000 and url is None:
                self.plain_cache[key] = out
        return out

    @staticmethod
    def tokens(resp: dict) -> tuple:
        return (resp.get("output_ids"), resp.get("text"))

    def compare(self, what: str, body: dict, got: dict, prefix: bool = False) -> None:
        if self.plain is None:
            with self.lock:
                self.deferred.append(("answer", what, body, got, prefix))
            return
        want = self.plain_answer(body)
        if want["status"] != 200:
            self.error(f"plain server answered {want['status']} to a {what} request: {want['text']}")
            return
        g_ids, g_text = self.tokens(got)
        w_ids, w_text = self.tokens(want["json"])
        if prefix:
            # without a tokenizer (GPU runs) an answer cut short can carry "" where plain has no text
            ok = (g_ids is None or w_ids[:len(g_ids)] == g_ids) and (not g_text or (w_text or "").startswith(g_text))
        else:
            ok = g_ids == w_ids and g_text == w_text
            ok = ok and got["meta_info"]["finish_reason"] == want["json"]["meta_info"]["finish_reason"]
        if not ok:
            self.mismatch(what, body, got, want["json"])
        else:
            self.count("compared")

    def greedy_params(self, rng: random.Random) -> dict:
        r = rng.random()
        new = rng.choice([0, 1]) if r < 0.06 else rng.randrange(2, 24) if r < 0.4 else rng.randrange(24, self.a.max_new)
        return {"temperature": 0, "max_new_tokens": new, "ignore_eos": rng.random() < 0.6}

    def with_stop(self, rng: random.Random, body: dict) -> dict:
        """Stops taken from the middle of the plain answer, so they land inside accepted runs."""
        base = self.plain_answer(body, None if self.plain else self.dflash)
        if base["status"] != 200:
            return body
        ids, text = self.tokens(base["json"])
        params = dict(body["sampling_params"])
        if text and rng.random() < 0.5:
            i = rng.randrange(len(text))
            params["stop"] = [text[i:i + rng.randrange(1, 4)]]
        elif ids:
            params["stop_token_ids"] = [ids[rng.randrange(len(ids))]]
        return {**body, "sampling_params": params}

    def one(self, rng: random.Random) -> None:
        kind = rng.choices(["greedy", "stop", "stream", "disconnect", "abort", "sampled", "invalid", "too_long"],
                           weights=[40, 14, 10, 8, 10, 8, 5, 5])[0]
        body = {**self.prompt(rng, kind != "too_long"), "sampling_params": self.greedy_params(rng)}
        if kind in ("stop", "stream", "disconnect", "abort"):
            body["sampling_params"]["max_new_tokens"] = max(body["sampling_params"]["max_new_tokens"], 8)
        if kind == "stop":
            body = self.with_stop(rng, body)
        getattr(self, "do_" + kind)(rng, body)

    def post(self, body: dict, **kw) -> requests.Response:
        return requests.post(self.dflash + "/generate", json=body, timeout=TIMEOUT, **kw)

    def do_greedy(self, rng, body, what="greedy") -> None:
        r = self.post(body)
        if r.status_code != 200:
            self.error(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
            return
        self.count("served")
        self.compare(what, body, r.json())

    def do_stop(self, rng, body) -> None:
        self.count("with_stop")
        self.do_greedy(rng, body, "stop")

    def stream(self, body: dict, max_chunks: Optional[int]) -> Optional[dict]:
        last = None
        with self.post({**body, "stream": True}, stream=True) as r:
            if r.status_code != 200:
                self.error(f"stream: HTTP {r.status_code}: {r.text[:300]}")
                return None
            for n, line in enumerate(r.iter_lines()):
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    last = json.loads(line[6:])
                if max_chunks is not None and n >= max_chunks:
                    break  # the client goes away mid-stream
        return last

    def do_stream(self, rng, body) -> None:
        last = self.stream(body, None)
        if last is not None:
            self.count("served")
            self.count("streamed")
            self.compare("stream", body, last)

    def do_disconnect(self, rng, body) -> None:
        body["sampling_params"]["max_new_tokens"] = max(body["sampling_params"]["max_new_tokens"], 64)
        last = self.stream(body, rng.randrange(1, 6))
        self.count("disconnected")
        if last is not None:
            self.compare("disconnect (partial)", body, last, prefix=True)

    def do_abort(self, rng, body) -> None:
        rid = uuid.uuid4().hex
        body["sampling_params"]["max_new_tokens"] = max(body["sampling_params"]["max_new_tokens"], 64)
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(r=self.post({**body, "rid": rid})))
        t.start()
        time.sleep(rng.random() * self.a.abort_delay)
        requests.post(self.dflash + "/abort_request", json={"rid": rid}, timeout=60)
        t.join()
        r = box.get("r")
        if r is None:
            self.error("abort: no response")
            return
        self.count("aborted")
        if r.status_code == 200:  # finished before the abort arrived, or cut off: a prefix of plain
            out = r.json()
            finished = out["meta_info"]["finish_reason"]["type"] != "abort"
            self.compare("abort", body, out, prefix=not finished)
        elif "abort" not in r.text.lower():
            self.error(f"abort: HTTP {r.status_code}: {r.text[:300]}")

    def do_sampled(self, rng, body) -> None:
        body["sampling_params"].update(temperature=rng.choice([0.5, 0.8, 1.0]), top_p=rng.choice([0.9, 1.0]),
                                       top_k=rng.choice([-1, 20]))
        r = self.post(body)
        if r.status_code == 400 and "DFLASH" in r.text:
            self.count("refused")
        elif r.status_code == 200:
            out = r.json()
            n = out["meta_info"]["completion_tokens"]
            if n > body["sampling_params"]["max_new_tokens"]:
                self.error(f"sampled: {n} tokens > max_new_tokens")
            else:
                self.count("sampled_served")
        else:
            self.error(f"sampled: HTTP {r.status_code}: {r.text[:300]}")

    def do_invalid(self, rng, body) -> None:
        bad = rng.choice([{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -5},
                          {"max_new_tokens": -1}, {"min_p": 2.0}])
        body["sampling_params"].update(bad)
        self.same_refusal("invalid", body)

    def do_too_long(self, rng, body) -> None:
        body.pop("text", None)
        body["input_ids"] = [rng.randrange(3, self.vocab - 64) for _ in range(self.a.context_length + rng.randrange(0, 64))]
        self.same_refusal("too_long", body)

    def same_refusal(self, what: str, body: dict, got: Optional[tuple] = None) -> None:
        r_status, r_text = got or (lambda r: (r.status_code, r.text))(self.post(body))
        if self.plain is None:
            with self.lock:
                self.deferred.append(("refusal", what, body, (r_status, r_text)))
            return
        want = self.plain_answer(body)
        if r_status != want["status"]:
            self.mismatch(f"{what} (status {r_status} vs plain {want['status']})", body, r_text[:300], want["text"])
        elif r_status == 200:  # SGLang accepts it after all (e.g. a negative top_k means "off"): same answer
            self.count("accepted_" + what)
            self.compare(what, body, json.loads(r_text))
        else:
            self.count("rejected_" + what)

    def replay(self, plain_url: str) -> None:
        """The deferred comparisons, against a plain server started after the DFLASH run."""
        from concurrent.futures import ThreadPoolExecutor

        self.plain = plain_url

        def one(item: tuple) -> None:
            try:
                if item[0] == "answer":
                    self.compare(*item[1:])
                else:
                    self.same_refusal(item[1], item[2], item[3])
            except Exception as e:  # noqa: BLE001
                self.error(f"replay: {type(e).__name__}: {e}")

        with ThreadPoolExecutor(self.a.concurrency) as pool:
            list(pool.map(one, self.deferred))

    # driver -----------------------------------------------------------------------------------
    def worker(self, idx: int) -> None:
        rng = random.Random(self.a.seed * 1000 + idx)
        while time.time() < self.stop_at and not self.dead.is_set():
            try:
                self.one(rng)
                self.count("requests")
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                self.error(f"{type(e).__name__}: {e}")


def scan_log(path: Optional[str]) -> dict:
    if not path or not os.path.exists(path):
        return {}
    text = open(path, errors="replace").read()
    return {"leak_errors": sum(text.count(p) for p in LEAK_PATTERNS[:1]),
            "tracebacks": sum(text.count(p) for p in ERROR_PATTERNS),
            "retractions": text.count(RETRACT_PATTERN),
            "log_tail_on_error": text[-3000:] if any(p in text for p in LEAK_PATTERNS + ERROR_PATTERNS) else None}


def run_workload(a, soak: Soak, report: dict, srv, pgid: Optional[int]) -> None:
    warm = {"input_ids": [5, 6, 7], "sampling_params": {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}}
    requests.post(soak.dflash + "/generate", json=warm, timeout=TIMEOUT).raise_for_status()  # pools settle first
    report["start"] = {"rss_mb": group_rss_mb(pgid), "kv_tokens": kv_tokens(soak.dflash)}
    log(f"start: {report['start']}")
    t0 = time.time()
    soak.stop_at = t0 + a.duration
    threads = [threading.Thread(target=soak.worker, args=(i,), daemon=True) for i in range(a.concurrency)]
    for t in threads:
        t.start()
    alive = True
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=max(0.1, a.progress / len(threads)))
        alive = srv is None or srv.alive()
        if not alive:
            soak.dead.set()
        with soak.lock:
            c = dict(soak.counts)
        rss = group_rss_mb(pgid)
        report.setdefault("rss_mb_samples", []).append([round(time.time() - t0), rss])
        log(f"t={time.time() - t0:.0f}s requests={c.get('requests', 0)} served={c.get('served', 0)} "
            f"errors={c.get('errors', 0)} mismatches={c.get('mismatches', 0)} aborted={c.get('aborted', 0)} "
            f"disconnected={c.get('disconnected', 0)} refused={c.get('refused', 0)} rss_mb={rss}")
    report["wall_s"] = round(time.time() - t0, 1)
    crashed = not alive
    if not crashed:
        try:
            time.sleep(5)  # idle: SGLang's pool accounting runs (strict: a leak stops the scheduler)
            report["end"] = {"rss_mb": group_rss_mb(pgid), "kv_tokens": kv_tokens(soak.dflash)}
            crashed = srv is not None and not srv.alive()
        except requests.RequestException as e:
            soak.error(f"end-of-run reads failed: {e}")
            crashed = True
    report["crashes"] = int(crashed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, required=True, help="seconds of workload")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--models", default=None, help="CPU: tiny-model directory (default: built by tests/helpers)")
    ap.add_argument("--pair", default="pi", help="CPU: 'pi' (pi target + oracle draft), 'qwen3' or 'gemma4'")
    ap.add_argument("--configs", default="/work/shared/design/configs", help="GPU: gemma-4-31B-it(-DFlash) configs")
    ap.add_argument("--dtype", default="bfloat16", help="GPU dtype")
    ap.add_argument("--layers", type=int, default=None,
                    help="GPU: keep only the target's first N layers (real shapes; for a float32 soak)")
    ap.add_argument("--draft-backend", default="triton")
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--context-length", type=int, default=1024)
    ap.add_argument("--max-total-tokens", type=int, default=None,
                    help="KV pool size (small values make SGLang retract decoding requests)")
    ap.add_argument("--max-new", type=int, default=160, help="largest max_new_tokens drawn")
    ap.add_argument("--abort-delay", type=float, default=1.5, help="aborts arrive within this many seconds")
    ap.add_argument("--plain-url", default=None)
    ap.add_argument("--sequential", action="store_true",
                    help="start the plain server only after the DFLASH run and replay the comparisons "
                         "(the default on cuda: one GPU holds one copy of a big target)")
    ap.add_argument("--dflash-url", default=None)
    ap.add_argument("--dflash-pid", type=int, default=None, help="with --dflash-url: its process group, for RSS")
    ap.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for the server logs and soak_report.json")
    a = ap.parse_args()
    interrupt_on_sigterm()
    if a.max_total_tokens is None and a.device == "cpu":
        a.max_total_tokens = 1024  # a few long requests at once fill it: SGLang retracts some
    out = a.out = a.out or os.environ.get("OUT") or "/tmp"
    os.makedirs(out, exist_ok=True)
    plain_args, dflash_args, env, has_tok = server_plan(a)
    vocab = 2048 if a.device == "cpu" else 262144
    if a.device == "cuda":
        with open(os.path.join(a.configs, "gemma-4-31B-it", "config.json")) as f:
            cfg = json.load(f)
        vocab = (cfg.get("text_config") or cfg)["vocab_size"]

    report: dict = {"command": " ".join(sys.argv), "device": a.device, "concurrency": a.concurrency,
                    "duration_s": a.duration}
    dflash_log = os.path.join(out, "soak_dflash.log") if not a.dflash_url else None
    sequential = a.sequential or (a.device == "cuda" and not a.plain_url)
    report["plain_server"] = "after the DFLASH run (replayed)" if sequential else "alongside"
    with ExitStack() as plain_stack:
        plain_url = None
        if a.plain_url:
            plain_url = a.plain_url
        elif not sequential:
            log("starting the plain server")
            plain_url = plain_stack.enter_context(server(plain_args, os.path.join(out, "soak_plain.log"), env)).url
        with ExitStack() as stack:
            srv = None
            if a.dflash_url:
                dflash_url, pgid = a.dflash_url, a.dflash_pid
            else:
                log("starting the DFLASH server")
                srv = stack.enter_context(server(dflash_args, dflash_log, env))
                dflash_url, pgid = srv.url, srv.proc.pid
            soak = Soak(a, plain_url, dflash_url, has_tok, vocab)
            run_workload(a, soak, report, srv, pgid)
        if sequential and not report["crashes"]:
            log(f"replaying {len(soak.deferred)} comparisons against a plain server")
            with server(plain_args, os.path.join(out, "soak_plain.log"), env) as plain_srv:
                soak.replay(plain_srv.url)
        report.update(soak.counts)
        report["mismatch_examples"] = soak.mismatches
        report["error_examples"] = soak.errors
    report["server_log"] = scan_log(dflash_log)
    start_kv, end_kv = report["start"]["kv_tokens"], (report.get("end") or {}).get("kv_tokens") or {}
    report["leaked_kv_tokens"] = (end_kv["used"] - start_kv["used"]) if end_kv.get("used") is not None else None
    if report.get("end"):
        report["rss_growth_mb"] = round(report["end"]["rss_mb"] - report["start"]["rss_mb"], 1) if pgid else None
    for k in ("requests", "served", "errors", "mismatches", "aborted", "disconnected", "refused"):
        report.setdefault(k, 0)
    report["ok"] = (report["mismatches"] == 0 and report["errors"] == 0 and report["crashes"] == 0
                    and report["leaked_kv_tokens"] == 0 and not report["server_log"].get("leak_errors")
                    and not report["server_log"].get("tracebacks"))
    with open(os.path.join(out, "soak_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("mismatch_examples", "error_examples")}, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
