"""Block attention at gemma-4-31B-it shapes: SGLang's Triton extend kernel vs ours (split-KV).

    python scripts/bench_block_attention.py [--prefix 512] [--batch 1,8,32] [--out DIR]

For each layer kind (target sliding / global, draft) and batch size: both kernels on the same
inputs (bf16, block of 16, page size 1, shuffled slots), their max difference, microseconds per
call (CUDA graph replays, as in the verify graph; also at other split counts), and the bytes each call must read (K/V of the prefix + Q) as
an effective bandwidth.  Writes block_attention.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd
from sglang_dflash.kernels import verify_attention as va
from sglang_dflash.kernels.verify_attention import verify_attention

KINDS = {  # q heads, kv heads, head dim, causal, window (SGLang's layer.sliding_window_size)
    "target-sliding": (32, 16, 256, True, 1023),
    "target-global": (32, 4, 512, True, -1),
    "draft": (64, 8, 128, False, -1),
}


def timed(fn, per_graph: int = 20, replays: int = 20) -> float:
    """Microseconds per call with the calls captured in a CUDA graph, as the verify runs them
    (eager timing would mostly measure Python launch overhead)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (per_graph * replays)


def case(kind: str, bs: int, prefix: int, width: int = 16) -> dict:
    hq, hkv, d, causal, window = KINDS[kind]
    g = torch.Generator(device="cuda").manual_seed(0)
    slots = bs * (prefix + width) + 64
    t = bs * width
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g, dtype=torch.bfloat16)  # noqa: E731
    q, k, v = rnd(t, hq, d), rnd(t, hkv, d), rnd(t, hkv, d)
    kbuf, vbuf = rnd(slots, hkv, d), rnd(slots, hkv, d)
    perm = torch.randperm(slots, device="cuda", generator=g)
    kv_len = min(prefix, window) if window > 0 else prefix  # SGLang hands sliding layers only the window
    kv_indptr = torch.arange(bs + 1, device="cuda", dtype=torch.int32) * kv_len
    kv_indices = perm[: bs * kv_len].to(torch.int32)
    qo_indptr = torch.arange(bs + 1, device="cuda", dtype=torch.int32) * width
    o_ref, o_ours = torch.empty_like(q), torch.empty_like(q)
    scale = 1.0
    run_ref = lambda: extend_attention_fwd(q, k, v, o_ref, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, None,  # noqa: E731
                                           causal, None, width, 1.0, 1.0, scale, sliding_window_size=window)
    run_ours = lambda: verify_attention(q, k, v, o_ours, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, causal,  # noqa: E731
                                        width, scale, 0.0, window)
    run_ref()
    run_ours()
    torch.cuda.synchronize()
    diff = (o_ref.float() - o_ours.float()).abs().max().item()
    us_ref, us_ours = timed(run_ref), timed(run_ours)
    read = bs * (kv_len * hkv * d * 2 * 2 + width * hq * d * 2)
    hg, splits = va.plan(bs, hq, hkv, width, d)
    sweep = {}  # the same kernel at other split counts (va._TARGET_PROGRAMS sets how many)
    default = va._TARGET_PROGRAMS
    for target in (66, 132, 528, 1056):
        va._TARGET_PROGRAMS = target
        sweep[va.plan(bs, hq, hkv, width, d)[1]] = round(timed(run_ours), 2)
    va._TARGET_PROGRAMS = default
    return {"kind": kind, "bs": bs, "prefix": prefix, "max_abs_diff": diff, "sglang_us": round(us_ref, 2),
            "ours_us": round(us_ours, 2), "speedup": round(us_ref / us_ours, 2), "bytes": read,
            "ours_GBps": round(read / us_ours / 1e3, 1), "heads_per_program": hg, "splits": splits,
            "ours_us_by_splits": sweep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", type=int, default=512)
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    rows = []
    for kind in KINDS:
        for bs in map(int, args.batch.split(",")):
            row = case(kind, bs, args.prefix)
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "block_attention.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
