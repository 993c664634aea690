"""GPU diagnostics: greedy output of several server configurations against plain decoding.

  python scripts/gpu_diag.py TARGET DRAFT      (tiny models from tests/helpers.tiny_models; float32 via
                                                tests/gpu_fp32; logs and a summary under $OUT)

Prints, per configuration, the first token index at which each of 8 prompts departs from the
first configuration's output (None = identical).  Used to show that on the GPU the tiny Gemma-4
departs from plain decoding under SGLang's built-in DFLASH as well as ours (BENCHMARKS.md).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from helpers import dflash_args, free_port, gpu_server_args, server, tiny_models
from workload import generate, prompts

models = tiny_models(checks=False)
target, draft = sys.argv[1], sys.argv[2]
fp32 = {"SGLANG_DFLASH_TEST_NATIVE_OPS": "1",
        "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "tests", "gpu_fp32") + os.pathsep + os.environ.get("PYTHONPATH", "")}
spec = dflash_args(os.path.join(models, draft)) + ["--speculative-draft-attention-backend", "triton"]
configs = {
    "plain": ([], {}),
    "ours": (spec, {}),
    "ours-nograph": (spec + ["--disable-cuda-graph"], {}),
    "ours-sglang-attention": (spec, {"SGLANG_DFLASH_BLOCK_ATTENTION": "sglang"}),
    "builtin": (spec, {"SGLANG_DFLASH_IMPL": "builtin"}),
}
ids = prompts(8)
ref = None
out_dir = os.environ.get("OUT", "/tmp")
for name, (extra, env) in configs.items():
    t = time.time()
    try:
        with server(gpu_server_args(os.path.join(models, target), free_port()) + extra, os.path.join(out_dir, f"diag_{name}.log"), env={**fp32, **env}) as s:
            outs = [o["output_ids"] for o in generate(s.url, ids)]
            log = s.log()
    except Exception as e:
        print(name, "FAILED", str(e)[-1500:])
        continue
    if ref is None:
        ref = outs
    first = [next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), None) for o, r in zip(outs, ref)]
    pools = [l.split("] ", 1)[-1] for l in log.splitlines() if "KV pool" in l or "KV Cache is allocated" in l or "SWAKVPool" in l]
    line = f"{name}: {time.time() - t:.0f}s first mismatch per prompt {first}; {pools[:4]}"
    print(line, flush=True)
    with open(os.path.join(out_dir, "diag_summary.txt"), "a") as f:
        f.write(line + "\n")
