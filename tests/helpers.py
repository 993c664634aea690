"""Test helpers: tiny models built once per checkout, and real SGLang servers started and stopped by PID."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
BUILDER = os.path.join(ROOT, "scripts", "make_tiny_models.py")
STARTUP_TIMEOUT = float(os.environ.get("SGLANG_DFLASH_TEST_STARTUP_TIMEOUT", "420"))


def tiny_models(dtype: str = "float32", checks: bool = True) -> str:
    """Directory with the tiny models, rebuilt whenever the builder script changes.  ``checks``
    runs the builder's HF self-checks (they need the CPU environment's transformers)."""
    with open(BUILDER, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(ROOT, ".models", f"{dtype}-{digest}")
    if not os.path.exists(os.path.join(out, ".complete")):
        subprocess.run([sys.executable, BUILDER, out, "--dtype", dtype] + ([] if checks else ["--skip-checks"]),
                       check=True)
        open(os.path.join(out, ".complete"), "w").close()
    return out


def free_port() -> int:
    """A free port below the kernel's ephemeral range.  A port the kernel hands out for bind(0) can
    be handed out again, to any socket, before the server binds it: a CI run lost a test to
    "address already in use" that way (the starting server's own sockets are candidates)."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000..{low - 1} after 100 tries")


def cpu_server_args(model: str, port: int) -> list[str]:
    return [
        "--model-path", model, "--device", "cpu", "--attention-backend", "torch_native",
        "--dtype", "float32", "--mem-fraction-static", "0.05", "--max-total-tokens", "16384",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
    ]


def gpu_server_args(model: str, port: int, max_bs: int = 8) -> list[str]:
    """What the GPU bundle serves with (triton attention, no flashinfer / xgrammar), graphs on."""
    return [
        "--model-path", model, "--attention-backend", "triton", "--sampling-backend", "pytorch",
        "--grammar-backend", "none", "--dtype", "float32", "--mem-fraction-static", "0.3",
        "--cuda-graph-backend-prefill", "disabled", "--cuda-graph-max-bs-decode", str(max_bs),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
    ]


# DFLASH under SGLang's overlap scheduler (the default) and the non-overlapped one.  SGLang has
# no speculative overlap on a CPU: tests/conftest.py sets SGLANG_DFLASH_TEST_CPU_OVERLAP so that the
# CPU runs the overlap bookkeeping too (with scripts/cpu_env/06-spec-overlap-on-cpu.patch).
SCHEDULERS = {"overlap": [], "no-overlap": ["--disable-overlap-schedule"]}


def check_scheduler(server_info: dict, scheduler: str) -> None:
    """The server ran the scheduler the test asked for, not a silent fallback."""
    overlapped = not server_info["disable_overlap_schedule"]
    assert overlapped == (scheduler == "overlap"), (
        f"asked for the {scheduler} scheduler, the server ran {'overlap' if overlapped else 'no-overlap'}"
        + ("" if overlapped else " (on a CPU: SGLANG_DFLASH_TEST_CPU_OVERLAP=1 and the CPU environment's "
                                 "scripts/cpu_env/06-spec-overlap-on-cpu.patch)"))


def dflash_args(draft: str, block: int = 16) -> list[str]:
    return ["--speculative-algorithm", "DFLASH", "--speculative-draft-model-path", draft,
            "--speculative-num-draft-tokens", str(block)]


def server_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra or {})
    env["PYTHONPATH"] = TESTS + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: str) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def gpu_fp32_env() -> dict:
    """Environment for float32 SGLang servers on a GPU: sgl_kernel has no float32 norm/activation
    kernels, so every SGLang op runs its plain-PyTorch forward (tests/gpu_fp32/sitecustomize.py)."""
    return {"SGLANG_DFLASH_TEST_NATIVE_OPS": "1",
            "PYTHONPATH": os.path.join(TESTS, "gpu_fp32") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cpu_engine_env() -> dict:
    """Environment for SGLang servers on this CPU machine: SGLang's CPU engine, torch.compile off
    (2 cores), and DFLASH's default overlap scheduler, which SGLang runs for speculative decoding
    only on a GPU (scripts/cpu_env/06-spec-overlap-on-cpu.patch makes the CPU run it too)."""
    return {"SGLANG_USE_CPU_ENGINE": "1", "TORCHDYNAMO_DISABLE": "1", "SGLANG_DFLASH_TEST_CPU_OVERLAP": "1"}


def interrupt_on_sigterm() -> None:
    """A SIGTERM (e.g. from ``timeout``) unwinds like Ctrl-C, so ``server`` stops the servers it
    started in their own sessions instead of leaving them holding a GPU; pytest still prints its
    summary."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def server(args: list[str], log_path: str, env: Optional[dict] = None) -> Iterator[Server]:
    """``python -m sglang.launch_server ARGS`` (the unchanged SGLang command), healthy or failed."""
    port = int(args[args.index("--port") + 1])
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "sglang.launch_server", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=server_env(env), start_new_session=True)
    srv = Server(proc, url, log_path)
    try:
        deadline = time.time() + STARTUP_TIMEOUT
        while True:
            if not srv.alive():
                raise RuntimeError(f"server exited with {proc.returncode}:\n{srv.log()[-4000:]}")
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT}s:\n{srv.log()[-4000:]}")
            time.sleep(1)
        yield srv
    finally:
        stop(proc)
        log.close()


def run_launcher(args: list[str], env: Optional[dict] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the launch command expecting it to fail (bad flags or draft): returns its output."""
    return subprocess.run([sys.executable, "-m", "sglang.launch_server", *args], capture_output=True, text=True,
                          env=server_env(env), timeout=timeout)
