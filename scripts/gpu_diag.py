"""GPU diagnostics: greedy output of several server configurations against plain decoding.

  python scripts/gpu_diag.py TARGET DRAFT      (tiny models from tests/helpers.tiny_models; float32 via
                                                tests/gpu_fp32; logs and a summary under $OUT)

Prints, per configuration, the first token index at which each of 8 prompts departs from the
model's own greedy output computed by Hugging Face transformers on the GPU (full recomputation
each token, float32; None = identical).  Used to locate the tiny Gemma-4's sliding-window
departure on the GPU (BENCHMARKS.md).
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
    "ours-sglang-attention": (spec, {"SGLANG_DFLASH_BLOCK_ATTENTION": "sglang"}),
    "ours": (spec, {}),
}
ids = prompts(8)


def hf_greedy(path: str, new_tokens: int = 64) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
    outs = []
    with torch.no_grad():
        for p in ids:
            seq = torch.tensor([p], device="cuda")
            for _ in range(new_tokens):
                nxt = model(seq).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
            outs.append(seq[0, len(p):].tolist())
    del model
    torch.cuda.empty_cache()
    return outs


ref = hf_greedy(os.path.join(models, target))
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
    first = [next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), None) for o, r in zip(outs, ref)]
    pools = [l.split("] ", 1)[-1] for l in log.splitlines() if "KV pool" in l or "KV Cache is allocated" in l or "SWAKVPool" in l]
    line = f"{name}: {time.time() - t:.0f}s first mismatch per prompt {first}; {pools[:4]}"
    print(line, flush=True)
    with open(os.path.join(out_dir, "diag_summary.txt"), "a") as f:
        f.write(line + "\n")
