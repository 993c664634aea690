"""Block attention at gemma-4-31B-it shapes: SGLang's Triton extend kernel vs ours (split-KV).

    python scripts/bench_block_attention.py [--prefix 512] [--batch 1,8,32] [--out DIR]
    python scripts/bench_block_attention.py --sweep [--batch 32] [--kinds target-sliding,target-global]

For each layer kind (target sliding / global, draft) and batch size: both kernels on the same
inputs (bf16, block of 16, page size 1, shuffled slots), their max difference, microseconds per
call (CUDA graph replays, as in the verify graph; also at other split counts), and the bytes each call must read (K/V of the prefix + Q) as
an effective bandwidth.  Writes block_attention.json under --out.

--static (no GPU needed) compiles each launch of that grid for sm_90 and reports what decides
whether it can be fast: shared memory (over 227 KB it cannot launch), registers, spills, and
whether its dots became warpgroup MMAs (HGMMA) or mma.sync (HMMA).  Use the device's Triton
(3.6.0 in the GPU bundle): with it the default launch's shared memory matched the H200 profile.

--sweep times our kernel under every launch of a grid (heads per program, prefix splits, keys per
tile, warps, stages, K tile loaded as rows or columns, slot prefetch, scores keys-by-queries;
``KernelConfig``), each checked against
SGLang's output, and writes the ranking to block_attention_sweep.json: where the default launch
stands and what the best one gains, per kind and batch size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time

import torch

from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd
from sglang_dflash.kernels import verify_attention as va
from sglang_dflash.kernels.verify_attention import verify_attention

LAYERS = {"target-sliding": 50, "target-global": 10, "draft": 5}  # per cycle at gemma-4-31B-it shapes
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


def inputs(kind: str, bs: int, prefix: int, width: int = 16) -> dict:
    """One layer's block-attention call at gemma-4-31B-it shapes, with SGLang's output as the reference."""
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
    o_ref = torch.empty_like(q)
    run_ref = lambda: extend_attention_fwd(q, k, v, o_ref, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, None,  # noqa: E731
                                           causal, None, width, 1.0, 1.0, 1.0, sliding_window_size=window)
    run_ref()
    return dict(args=(q, k, v, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, causal, width, 1.0, 0.0, window),
                run_ref=run_ref, o_ref=o_ref, read=bs * (kv_len * hkv * d * 2 * 2 + width * hq * d * 2))


def ours(x: dict, config=None):
    """A call of our kernel on ``x``'s inputs (with ``config``) and the output it writes."""
    q, k, v, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, causal, width, scale, cap, window = x["args"]
    o = torch.empty_like(q)
    return (lambda: verify_attention(q, k, v, o, kbuf, vbuf, qo_indptr, kv_indptr, kv_indices, causal, width,  # noqa: E731
                                     scale, cap, window, config=config)), o


def case(kind: str, bs: int, prefix: int, width: int = 16) -> dict:
    hq, hkv, d = KINDS[kind][:3]
    x = inputs(kind, bs, prefix, width)
    run_ref, o_ref, read = x["run_ref"], x["o_ref"], x["read"]
    run_ours, o_ours = ours(x)
    run_ours()
    torch.cuda.synchronize()
    diff = (o_ref.float() - o_ours.float()).abs().max().item()
    us_ref, us_ours = timed(run_ref), timed(run_ours)
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


# (K tile as rows, slot prefetch, scores keys-by-queries): the kernel's loop variants
LOOPS = [(False, False, False), (True, False, False), (False, True, False), (True, True, False), (False, False, True)]


def launches(kind: str) -> list:
    """The sweep's grid: launches that tile this kind's heads within the default accumulator cap
    (at twice the cap every global-layer launch spilled: --static, Triton 3.6, sm_90) and whose
    pipelined K/V tiles stay well inside an SM's 227 KB of shared memory (larger ones fail to
    launch: 168 KB at 2 x 64 keys of head dim 256 in the keys-by-queries loop), in a fixed shuffled
    order so that a time budget samples every dimension."""
    hq, hkv, d = KINDS[kind][:3]
    group = hq // hkv
    hgs = [h for h in (1, 2, 4, 8, 16) if group % h == 0 and 16 * h * d <= va._MAX_TILE]
    grid = [va.KernelConfig(hg, splits, block_n, warps, stages, *loop)
            for hg, splits, block_n, warps, stages, loop in itertools.product(
                hgs, (1, 2), (32, 64), (4, 8), (2, 3), LOOPS)
            if stages * block_n * 2 * d * 2 <= 160 * 1024]
    random.Random(0).shuffle(grid)
    return grid


def static_facts(kind: str, cfg, width: int = 16) -> dict:
    """Compiles one launch for sm_90 without a GPU; its resources and MMA kind from the cubin."""
    import re
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    hq, hkv, d, causal, window = KINDS[kind]
    kern = va._split_kernel
    names = kern.arg_names
    consts = dict(GROUP=hq // hkv, HG=cfg.heads_per_program, E_PAD=max(16, triton.next_power_of_2(width)),
                  NUM_SPLITS=cfg.splits, D=d, DV=d, BLOCK_D=triton.next_power_of_2(d),
                  BLOCK_DV=triton.next_power_of_2(d), BLOCK_N=cfg.block_n, CAUSAL=causal, WINDOW=max(window, 0),
                  HAS_CAP=False, K_ROWS=cfg.k_rows, PREFETCH=cfg.prefetch, KEYS_AS_ROWS=cfg.keys_as_rows)
    ptrs = {"qo_indptr": "*i64", "kv_indptr": "*i32", "kv_indices": "*i32", "Part_acc": "*fp32", "Part_ml": "*fp32",
            "sm_scale": "fp32", "logit_cap": "fp32"}
    sig = {n: "constexpr" if n in consts else ptrs.get(n, "i32" if n.startswith("stride") else "*bf16")
           for n in names}
    # As launched at these shapes: every pointer and stride a multiple of 16 (Triton specialises on it)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if sig[n][0] == "*" or n.startswith("stride")}
    src = ASTSource(fn=kern, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()}, attrs=attrs)
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                         options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(out.asm["cubin"])
        f.flush()
        usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    count = lambda op: len(re.findall(rf"\b{op}\b", sass))  # noqa: E731
    return {"shared": out.metadata.shared, "fits": out.metadata.shared <= 227 * 1024,
            "registers": int(re.search(r"REG:(\d+)", usage).group(1)), "spill_stores": count("STL"),
            "hgmma": count("HGMMA"), "hmma": count("HMMA")}


def sweep(kind: str, bs: int, prefix: int, budget_s: float) -> dict:
    """Our kernel under each launch of ``launches`` (until ``budget_s``), ranked by time."""
    hq, hkv, d, _, _ = KINDS[kind]
    x = inputs(kind, bs, prefix)
    default = va.choose_config(bs, hq, hkv, 16, d, d)
    rows, t0 = [], time.time()
    for cfg in [default] + [c for c in launches(kind) if c != default]:
        if time.time() - t0 > budget_s:
            break
        run, o = ours(x, cfg)
        try:
            run()
            torch.cuda.synchronize()
            diff = (x["o_ref"].float() - o.float()).abs().max().item()
            us = timed(run, per_graph=10, replays=10)
        except Exception as e:  # noqa: BLE001 - e.g. a tile that needs more shared memory than the SM has
            rows.append({"config": cfg._asdict(), "error": str(e).splitlines()[0][:200]})
            continue
        rows.append({"config": cfg._asdict(), "us": round(us, 2), "GBps": round(x["read"] / us / 1e3, 1),
                     "max_abs_diff": diff, "ok": diff < 0.05})
    timed_rows = sorted((r for r in rows if r.get("ok")), key=lambda r: r["us"])
    out = {"kind": kind, "bs": bs, "prefix": prefix, "tried": len(rows), "default": rows[0],
           "best": timed_rows[:5], "wrong": [r for r in rows if r.get("ok") is False],
           "errors": sum("error" in r for r in rows)}
    if timed_rows and "us" in rows[0]:
        out["best_speedup_over_default"] = round(rows[0]["us"] / timed_rows[0]["us"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", type=int, default=512)
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--sweep", action="store_true", help="rank our kernel's launches (see above)")
    ap.add_argument("--static", action="store_true", help="compile the sweep's launches for sm_90 (see above)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--budget-s", type=float, default=120, help="--sweep: seconds per kind and batch size")
    args = ap.parse_args()
    if args.static:
        facts = []
        for kind in args.kinds.split(","):
            for cfg in launches(kind):
                facts.append({"kind": kind, "config": cfg._asdict(), **static_facts(kind, cfg)})
                print(json.dumps(facts[-1]), flush=True)
        with open(os.path.join(args.out, "block_attention_static.json"), "w") as f:
            json.dump(facts, f, indent=1)
        return
    rows = []
    for kind in args.kinds.split(","):
        for bs in map(int, args.batch.split(",")):
            row = sweep(kind, bs, args.prefix, args.budget_s) if args.sweep else case(kind, bs, args.prefix)
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = "block_attention_sweep.json" if args.sweep else "block_attention.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(rows, f, indent=1)
    if args.sweep:  # the winners, for SGLANG_DFLASH_ATTN_LAUNCHES (bench_gemma.py --attn-launches)
        table = {va.launch_key(r["bs"], *KINDS[r["kind"]][:3]): r["best"][0]["config"] for r in rows
                 if r.get("best_speedup_over_default", 0) >= 1.03}
        with open(os.path.join(args.out, "block_attention_launches.json"), "w") as f:
            json.dump(table, f, indent=1)
        print(f"launches faster than the default by >= 3%: {json.dumps(table)}", flush=True)
        # the prediction the end-to-end A/B (bench_gemma.py +tuned) checks: per verify, every layer
        saved = sum(LAYERS.get(r["kind"], 0) * (r["default"]["us"] - r["best"][0]["us"]) for r in rows
                    if r.get("best_speedup_over_default", 0) >= 1.03)
        print(f"predicted: {saved / 1e3:.2f} ms less per verify at these batch sizes and prefix", flush=True)


if __name__ == "__main__":
    main()
