#!/usr/bin/env python3
"""Side-by-side benchmark at gemma-4-31B-it shapes (dummy weights), in ONE run on one GPU:

  (a) plain decoding, (b) SGLang's built-in DFLASH (SGLANG_DFLASH_IMPL=builtin), (c) our DFLASH,
  (d) optionally our DFLASH with controlled acceptance (--accept 8.59; benchmark-only mode),
  and `ours-sglang-attention` (ours with SGLang's extend kernel for the block attention).
  A mode may name variants after '+': `ours-controlled+nooverlap` (SGLang's non-overlapped
  scheduler), `ours-controlled+auto` (load-adaptive verify width), `ours-controlled+syncwindow`
  (SGLang's own window-slot translation in verify planning, with its host sync: hook 9's A/B),
  `+compile` (SGLang's torch.compile of the graphs; run plain+compile beside it).

For every concurrency it reports the plain step time, the
speculative cycle time (draft + verify + bookkeeping) and cycle/step, tokens per cycle and decode
tok/s, all in the steady state (every request of the round decoding; streamed timestamps), the
wall-clock tok/s (prefill included), and our per-phase breakdown (SGLANG_DFLASH_PROFILE=1).

  python scripts/bench_gemma.py --configs .devbundle/configs --concurrency 1,8,32 --new-tokens 256 \\
      --modes plain,builtin,ours --accept 8.59 --out $OUT

The plain run also records every prompt's greedy continuation, which controlled acceptance replays.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Optional

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from helpers import interrupt_on_sigterm  # noqa: E402

MODE_ENV = {  # modes other than plain / ours / ours-controlled, as environment switches
    "builtin": {"SGLANG_DFLASH_IMPL": "builtin"},
    "ours-sglang-attention": {"SGLANG_DFLASH_BLOCK_ATTENTION": "sglang"},  # SGLang's extend kernel in blocks
}
# A mode may carry variants after '+', e.g. ours-controlled+nooverlap: (server args, environment).
VARIANTS = {
    "nooverlap": (["--disable-overlap-schedule"], {}),
    "auto": ([], {"SGLANG_DFLASH_VERIFY_WIDTH": "auto"}),  # load-adaptive verify width
    "syncwindow": ([], {"SGLANG_DFLASH_WINDOW_TRANSLATE": "sglang"}),  # SGLang's synced window translation
    # SGLang's torch.compile of the decode/verify graphs (fuses each layer's elementwise ops); give
    # plain the same variant for a fair ratio
    "compile": (["--enable-torch-compile", "--torch-compile-max-bs", "32"], {}),
    # the block-attention launches a kernel sweep measured best (--attn-launches FILE)
    "tuned": ([], {}),
}
URL = "http://127.0.0.1:30000"  # --port sets it


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def server_args(cfg_dir: str, mode: str, draft_backend: str, concs: list[int], port: int, tp: int = 1,
                radix_cache: bool = False) -> list[str]:
    max_bs = max(concs)
    args = ["--model-path", os.path.join(cfg_dir, "gemma-4-31B-it"), "--load-format", "dummy",
            "--skip-tokenizer-init", "--host", "127.0.0.1", "--port", str(port),
            "--attention-backend", "triton", "--sampling-backend", "pytorch", "--grammar-backend", "none",
            "--cuda-graph-backend-prefill", "disabled",
            "--cuda-graph-bs-decode", *map(str, sorted(set(concs))),  # graphs for the measured sizes only
            # Under TP2 a card holds half the weights, so SGLang's static share becomes a pool of twice
            # the tokens, and the DFLASH draft's KV pool (sized by that token count, allocated after it)
            # left 3 GB for activations: both DFLASH workers ran out of memory at c32 (2x H200, 0.85).
            "--max-running-requests", str(max_bs), "--mem-fraction-static", "0.85" if tp == 1 else "0.75",
            "--context-length", "4096",
            "--chunked-prefill-size", "2048", "--log-level", "info", "--tp-size", str(tp)]
    if not radix_cache:
        args.append("--disable-radix-cache")
    if mode != "plain":
        args += ["--speculative-algorithm", "DFLASH",
                 "--speculative-draft-model-path", os.path.join(cfg_dir, "gemma-4-31B-it-DFlash"),
                 "--speculative-draft-load-format", "dummy", "--speculative-num-draft-tokens", "16",
                 "--speculative-draft-attention-backend", draft_backend]
    return args


def start(args: list[str], env: dict, log_path: str, timeout: float = 600) -> subprocess.Popen:
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", *args], stdout=open(log_path, "w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {log_path}:\n" + open(log_path).read()[-3000:])
        try:
            if requests.get(URL + "/health", timeout=2).status_code == 200:
                log(f"server up after {time.time() - t0:.0f} s")
                return proc
        except requests.RequestException:
            pass
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"server not up after {timeout} s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)


def prompts(n: int, length: int = 256) -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(10, 200000) for _ in range(length)] for _ in range(n)]


def generate(ids: list[int], new: int) -> dict:
    r = requests.post(URL + "/generate", json={"input_ids": ids, "sampling_params": {
        "max_new_tokens": new, "temperature": 0, "ignore_eos": True}}, timeout=1800)
    r.raise_for_status()
    return r.json()


def streamed_generate(ids: list[int], new: int) -> tuple[dict, list[tuple[float, int]]]:
    """Streams one request: its final output and, per streamed chunk, (time, tokens so far)."""
    body = {"input_ids": ids, "stream": True,
            "sampling_params": {"max_new_tokens": new, "temperature": 0, "ignore_eos": True}}
    out, marks = None, []
    with requests.post(URL + "/generate", json=body, stream=True, timeout=1800) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            out = json.loads(line[6:])
            marks.append((time.time(), out["meta_info"]["completion_tokens"]))
    return out, marks


def tokens_per_cycle(out: dict) -> float:
    """A request's decode tokens per cycle: SGLang reports its verify count only in the final
    chunk, so the window's cycles are its tokens over this (prefill's first token excluded)."""
    meta = out["meta_info"]
    cycles = meta.get("spec_verify_ct") or 0
    return (meta["completion_tokens"] - 1) / cycles if cycles else 1.0


def at(marks: list[tuple[float, int]], t: float) -> int:
    """Tokens streamed by time t."""
    last = 0
    for when, toks in marks:
        if when > t:
            break
        last = toks
    return last


def steady_state(runs: list[tuple[dict, list[tuple[float, int]]]], concurrent: bool) -> dict:
    """Decode-only figures over the window in which every request of the round is decoding
    (after the last first token, before the first last token), so prefills, queueing and
    ragged ends stay out.  Sequential requests (concurrency 1) are windowed one by one."""
    timelines = [m for _, m in runs]
    windows = ([(max(m[0][0] for m in timelines), min(m[-1][0] for m in timelines))] * len(timelines)
               if concurrent else [(m[0][0], m[-1][0]) for m in timelines])
    if any(b <= a for a, b in windows):
        # A request finished before another had its first token (2x H200, TP2, c32: one round took
        # less time than the spread of the requests' arrivals): no full batch to measure.
        log("no window in which every request of the round decodes: steady-state figures not measured")
        return dict(window_s=None, window_cycles=None, decode_tok_s=None, accept_len=None, step_ms=None)
    toks = cycles = 0.0
    rate = cycle_s = 0.0
    for (out, marks), (a, b) in zip(runs, windows):
        n_tok = at(marks, b) - at(marks, a)
        n_cyc = n_tok / tokens_per_cycle(out)
        toks, cycles = toks + n_tok, cycles + n_cyc
        rate += n_tok / (b - a)
        cycle_s += (b - a) / max(n_cyc, 1)
    n = len(timelines)
    return dict(window_s=round(windows[0][1] - windows[0][0], 3), window_cycles=round(cycles / n, 1),
                decode_tok_s=round(rate if concurrent else rate / n, 1), accept_len=round(toks / max(cycles, 1), 3),
                step_ms=round(1000 * cycle_s / n, 2))


def sample_scheduler(pgid: int, out_path: str, seconds: float) -> Optional[subprocess.Popen]:
    """py-spy (if installed) samples the Python stacks of the scheduler of the server in process
    group ``pgid`` for ``seconds``: where its host time goes while the device runs, waits on the
    device included (--idle; raw collapsed stacks, one line per stack)."""
    pids = subprocess.run(["pgrep", "-g", str(pgid), "-f", "sglang::scheduler"], capture_output=True,
                          text=True).stdout.split()
    if not pids or not shutil.which("py-spy"):
        log("py-spy: no scheduler process or no py-spy; not sampled")
        return None
    return subprocess.Popen(["py-spy", "record", "-p", pids[0], "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                             "-o", out_path, "--nonblocking", "--idle"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(concs: list[int], new: int, pool: list[list[int]], controlled: bool = False,
            spy: Optional[tuple[int, str]] = None) -> list[dict]:
    """Per concurrency: wall-clock output tok/s (prefill included), and the steady-state decode
    figures (steady_state): cycle (or plain step) time, tokens per cycle, decode tok/s.  ``spy``:
    (server process group, path prefix) for py-spy samples of its scheduler during a decode round
    at each concurrency."""
    rows = []
    with ThreadPoolExecutor(max(concs)) as ex:  # warm-up: every prompt once at the largest concurrency
        list(ex.map(lambda p: generate(p, new), pool))
    for c in concs:
        n = max(c, 2)
        if spy:  # decode rounds of their own while the sampler runs, so it touches no measured one
            sampler = sample_scheduler(spy[0], f"{spy[1]}_c{c}.txt", 6)
            while sampler is not None and sampler.poll() is None:
                with ThreadPoolExecutor(c) as ex:
                    list(ex.map(lambda i: generate(pool[i], new), range(c)))
        if controlled:
            # The acceptance controller corrects its draw by the commits it measures, and that
            # correction depends on the batch size (bf16 verify numerics against the recorded
            # continuations): some 300 steps at this concurrency settle it.
            for _ in range(12):
                with ThreadPoolExecutor(c) as ex:
                    list(ex.map(lambda i: generate(pool[i], new), range(n)))
        t = time.time()
        with ThreadPoolExecutor(c) as ex:
            runs = list(ex.map(lambda i: streamed_generate(pool[i], new), range(n)))
        wall = time.time() - t
        toks = sum(o["meta_info"]["completion_tokens"] for o, _ in runs)
        row = dict(conc=c, requests=n, out_tokens=toks, wall_s=round(wall, 2), tok_s=round(toks / wall, 1),
                   **steady_state(runs, concurrent=c > 1), t_start=t, t_end=time.time())
        log(json.dumps({k: v for k, v in row.items() if not k.startswith("t_")}))
        rows.append(row)
    return rows


PHASE_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)[^\]]*\].*sglang-dflash phases bs (\d+) "
                      r"\(ms/step, mean of (\d+)\): (.*)$")


def phases(log_path: str, t0: float, t1: float, bs: int) -> dict:
    """Step-weighted means of our phase log lines for batch size ``bs`` emitted between t0 and t1
    (the round's last steps, with fewer requests, have lines of their own)."""
    sums: dict[str, float] = {}
    total = cycle_steps = 0
    for line in open(log_path, errors="replace"):
        m = PHASE_RE.match(line.strip())
        if not m or int(m.group(2)) != bs:
            continue
        ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        if not t0 - 1 <= ts <= t1 + 1:
            continue
        n = int(m.group(3))
        total += n
        for part in m.group(4).split(", "):
            name, value = part.rsplit(" ", 1)
            if value == "-":  # no two consecutive steps of this size in the line's steps
                continue
            cycle_steps += n if name == "cycle" else 0
            sums[name] = sums.get(name, 0.0) + float(value) * n
    return {k: round(v / (cycle_steps if k == "cycle" else total), 3) for k, v in sums.items()} if total else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=".devbundle/configs")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256, help="tokens per random prompt")
    ap.add_argument("--radix-cache", action="store_true",
                    help="keep SGLang's radix cache.  With it off, SGLang 0.5.17 sizes the sliding-window pool "
                         "for a full window (1024 tokens) per running request: at c32 that is 28 GiB, more than "
                         "an 80 GB card has left beside gemma-4-31B-it's weights.  With it on, the pools follow "
                         "--swa-full-tokens-ratio, and repeated prompts hit the cache (decode figures unchanged; "
                         "the wall-clock tok/s then counts less prefill)")
    ap.add_argument("--modes", default="plain,builtin,ours",
                    help="in run order; ours-controlled (needs --accept) runs last unless placed; "
                         f"variants after '+': {', '.join(VARIANTS)} (e.g. ours-controlled+nooverlap)")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--server-args", default="", metavar="ARGS",
                    help="appended to every server's arguments (later flags win), e.g. "
                         "'--mem-fraction-static 0.93 --swa-full-tokens-ratio 1.0' to fit c32 on an 80 GB card")
    ap.add_argument("--accept", type=float, default=None, help="also run ours with controlled acceptance")
    ap.add_argument("--draft-backend", default="triton")
    ap.add_argument("--tp", type=int, default=1, help="--tp-size of every server (2: two GPUs)")
    ap.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of every ours* server, e.g. SGLANG_DFLASH_VERIFY_KNEE=256 (repeatable)")
    ap.add_argument("--torch-profile", action="store_true", help="torch.profiler table + timeline of 10 decode steps at the largest concurrency")
    ap.add_argument("--attn-launches", default=None, metavar="FILE",
                    help="variant +tuned: block_attention_launches.json of bench_block_attention.py --sweep")
    ap.add_argument("--py-spy", action="store_true",
                    help="sample the scheduler's Python stacks (py-spy) during a decode round at each concurrency")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--continuations", default=None,
                    help="recorded plain continuations to replay (default: OUT/continuations.json from this run's plain mode)")
    a = ap.parse_args()
    interrupt_on_sigterm()  # a timeout still stops the server it started
    global URL
    URL = f"http://127.0.0.1:{a.port}"
    concs = [int(c) for c in a.concurrency.split(",")]
    pool = prompts(max(max(concs), 4), a.prompt_len)
    base_env = dict(os.environ, SGLANG_SWA_EVICTION_INTERVAL=os.environ.get("SGLANG_SWA_EVICTION_INTERVAL", "8"))
    conts_path = a.continuations or os.path.join(a.out, "continuations.json")
    runs = [m for m in a.modes.split(",") if m]
    for m in runs:
        if any(v not in VARIANTS for v in m.split("+")[1:]):
            ap.error(f"mode {m}: variants are {', '.join(VARIANTS)}")
    if any("tuned" in m.split("+")[1:] for m in runs) and not a.attn_launches:
        ap.error("variant +tuned needs --attn-launches")
    if a.accept is not None and not any(m.startswith("ours-controlled") for m in runs):
        runs.append("ours-controlled")
    if any(m.startswith("ours-controlled") for m in runs) and a.accept is None:
        ap.error("mode ours-controlled needs --accept")
    results: dict = {"card": None, "command": " ".join(sys.argv), "runs": {}}
    try:
        import torch

        results["card"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - the card name is informative only
        pass
    for mode in runs:
        base, *variants = mode.split("+")
        tag = mode.replace("+", "_")  # file names under --out (the device returns no '+')
        env = dict(base_env, **MODE_ENV.get(base, {}))
        extra = []
        for v in variants:
            extra += VARIANTS[v][0]
            env.update(VARIANTS[v][1])
        if "tuned" in variants:
            env["SGLANG_DFLASH_ATTN_LAUNCHES"] = os.path.abspath(a.attn_launches)
        if mode.startswith("ours"):
            env.update(kv.split("=", 1) for kv in a.ours_env)
            env["SGLANG_DFLASH_PROFILE"] = "1"
            if a.torch_profile:  # the largest concurrency's steps: the batch whose cost is in question
                env["SGLANG_DFLASH_TORCH_PROFILE"] = os.path.join(a.out, f"profile_{tag}")
                env["SGLANG_DFLASH_TORCH_PROFILE_BS"] = str(max(concs))
        if base == "ours-controlled":
            env.update(SGLANG_DFLASH_BENCH_ACCEPT=str(a.accept), SGLANG_DFLASH_BENCH_CONTINUATIONS=conts_path)
        log(f"=== {mode}")
        try:  # a mode that fails is reported and the others still run
            rows = run_mode(a, mode, tag, base, extra, env, concs, pool, conts_path)
            results["runs"][mode] = rows
        except Exception as e:  # noqa: BLE001
            log(f"{mode} FAILED: {e}")
            results.setdefault("errors", {})[mode] = str(e)[-3000:]
        with open(os.path.join(a.out, "bench_gemma.json"), "w") as f:  # partial results survive a time-out
            json.dump(results, f, indent=1)
    summarize(results, concs)
    with open(os.path.join(a.out, "bench_gemma.json"), "w") as f:
        json.dump(results, f, indent=1)
    if results.get("errors"):
        sys.exit(1)


def run_mode(a, mode: str, tag: str, base: str, extra: list[str], env: dict, concs: list[int],
             pool: list[list[int]], conts_path: str) -> list[dict]:
    log_path = os.path.join(a.out, f"server_{tag}.log")
    args = (server_args(a.configs, base, a.draft_backend, concs, a.port, a.tp, a.radix_cache) + shlex.split(a.server_args)
            + extra)
    proc = start(args, env, log_path)
    try:
        if mode == "plain" and not a.continuations:  # the target's own greedy continuations
            with ThreadPoolExecutor(max(concs)) as ex:
                outs = list(ex.map(lambda p: generate(p, a.new_tokens + 16)["output_ids"], pool))
            json.dump({",".join(map(str, p)): o for p, o in zip(pool, outs)}, open(conts_path, "w"))
        rows = measure(concs, a.new_tokens, pool, controlled=base == "ours-controlled",
                       spy=(proc.pid, os.path.join(a.out, f"pyspy_{tag}")) if a.py_spy else None)
        if mode.startswith("ours"):
            time.sleep(2)
            for r in rows:
                r["phases_ms"] = phases(log_path, r["t_start"], r["t_end"], r["conc"])
        return rows
    finally:
        stop(proc)


def summarize(results: dict, concs: list[int]) -> None:
    runs = results["runs"]
    lines = [f"card: {results['card']}", "",
             "| run | conc | tokens/cycle | step or cycle (ms) | cycle / plain step | decode tok/s | x plain |"
             " wall tok/s (with prefill) | x plain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, rows in runs.items():
        for r in rows:
            plain = next((p for p in runs.get("plain", []) if p["conc"] == r["conc"]), None)
            steady = plain and plain["step_ms"] and r["step_ms"]
            ratio = f"{r['step_ms'] / plain['step_ms']:.2f}" if steady and mode != "plain" else "-"
            dec = f"{r['decode_tok_s'] / plain['decode_tok_s']:.2f}" if steady else "-"
            wall = f"{r['tok_s'] / plain['tok_s']:.2f}" if plain else "-"
            lines.append(f"| {mode} | {r['conc']} | {r['accept_len']} | {r['step_ms']} | {ratio} | {r['decode_tok_s']} | {dec} "
                         f"| {r['tok_s']} | {wall} |")
    for mode, rows in runs.items():
        for r in rows:
            if r.get("phases_ms"):
                lines.append(f"phases {mode} c={r['conc']}: " + json.dumps(r["phases_ms"]))
    text = "\n".join(lines)
    print(text, flush=True)
    results["summary"] = text


if __name__ == "__main__":
    main()
