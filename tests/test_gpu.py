"""On the GPU machine: our DFLASH with CUDA graphs (draft and verify) through the real server,
greedy output equal to plain decoding for the tiny Qwen3 and Gemma-4 pairs (float32), under the
overlap scheduler (the default) and the non-overlapped one."""

import os
import re

import pytest

from collections import Counter

import requests

from helpers import (
    SCHEDULERS, check_scheduler, dflash_args, free_port, gpu_fp32_env, gpu_server_args, server, tiny_models,
)
from markov_model import markov_model
from test_sampling_distribution import CONFIGS, GREEDY_PROMPTS, ORACLE, PROMPT, compare
from workload import generate, greedy_logprob_error, logprob_request, parting, prompts

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

PAIRS = [("qwen3", "qwen3-dflash"), ("gemma4", "gemma4-dflash")]
FP32_ENV = gpu_fp32_env()


def run(models, target, draft, log_path, scheduler=None, env=None, extra=()):
    """Plain decoding, or DFLASH under ``scheduler`` (tests/helpers.py SCHEDULERS)."""
    args = gpu_server_args(os.path.join(models, target), free_port()) + list(extra)
    if scheduler:
        args += dflash_args(os.path.join(models, draft)) + ["--speculative-draft-attention-backend", "triton"]
        args += SCHEDULERS[scheduler]
    ids = prompts(8)
    with server(args, log_path, env={**FP32_ENV, **(env or {})}) as srv:
        if scheduler:
            check_scheduler(requests.get(srv.url + "/get_server_info", timeout=30).json(), scheduler)
        single = [generate(srv.url, p)["output_ids"] for p in ids]
        batch = generate(srv.url, ids)
        logprobs = logprob_request(srv.url, ids[1])["meta_info"]
        log = srv.log()
    return single, [o["output_ids"] for o in batch], [o["meta_info"] for o in batch], logprobs, log


_PLAIN: dict = {}


def plain(models, target, tmp_path):
    """Plain decoding's outputs for ``target`` (one plain server per target for the module)."""
    if target not in _PLAIN:
        _PLAIN[target] = run(models, target, None, tmp_path / "plain.log")
    return _PLAIN[target]


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("target,draft", PAIRS)
def test_gpu_dflash_equals_plain_with_cuda_graphs(target, draft, scheduler, tmp_path):
    models = tiny_models(checks=False)  # the GPU machine's transformers is newer than the CPU env's
    p_single, p_batch, _, p_lp, _ = plain(models, target, tmp_path)
    s_single, s_batch, meta, s_lp, log = run(models, target, draft, tmp_path / "dflash.log", scheduler)
    assert "DFLASH implementation: sglang-dflash" in log
    assert s_single == p_single
    assert s_batch == p_batch
    assert all(m["spec_verify_ct"] >= 1 for m in meta)
    # Token and top-5 logprobs from the verify logits, as plain decoding's.  The verify is a 16-token
    # forward (other GEMM tilings, our block-attention kernel) where plain decoding runs 1-token
    # ones: float32 on the H200 differed by up to 2.3e-4 (Qwen3) and 1.8e-3 (Gemma-4, softcapped)
    # (2026-11-27); a logprob taken at the wrong position or from the wrong distribution is off by
    # orders of magnitude more.  Such differences may flip a near-tie (2026-11-27, Gemma-4 under
    # overlap: the runs parted at one position, DFLASH's token at logprob -4.41793, plain's at
    # -4.41790; plain's score of DFLASH's token was not kept): greedy_logprob_error allows that
    # and only that.
    assert greedy_logprob_error(s_lp, p_lp, tol=5e-3) <= 5e-3
    # Both the target (verify) and the draft captured CUDA graphs; decode steps replayed them.
    assert set(re.findall(r"Capture (\w+) verify CUDA graph end", log)) == {"draft", "target"}, log[-3000:]
    assert "cuda graph: True" in log


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_gpu_partial_verify_equals_plain(scheduler, tmp_path):
    """Load-adaptive verify width on the GPU (sglang_dflash/verify_width.py): with a knee of 24
    tokens the batch of 8 verifies only part of each block, through the CUDA graphs captured for
    the narrower widths (sglang_dflash/verify_graphs.py); single requests keep the whole block.
    Outputs equal plain decoding."""
    models = tiny_models(checks=False)
    p_single, p_batch, _, _, _ = plain(models, "gemma4", tmp_path)
    env = {"SGLANG_DFLASH_VERIFY_WIDTH": "auto", "SGLANG_DFLASH_VERIFY_KNEE": "24", "SGLANG_DFLASH_VERIFY_SPAN": "24"}
    s_single, s_batch, _, _, log = run(models, "gemma4", "gemma4-dflash", tmp_path / "dflash.log", scheduler, env=env)
    assert "first narrowed block" in log, log[-3000:]
    assert re.search(r"verify graphs: widths \[6, 8, 10, 12\] captured for bs \[[\d, ]+\]", log), log[-3000:]
    assert re.search(r"first narrowed verify, \d+ positions x \d+ requests, cuda graph: True", log), log[-3000:]
    assert s_single == p_single
    assert s_batch == p_batch


@pytest.mark.parametrize("target,draft", PAIRS)
def test_gpu_tp2_dflash_equals_plain_tp1(target, draft, tmp_path):
    """Issue 8 on two GPUs: our DFLASH with --tp-size 2 (sharded draft, vocabulary-sharded greedy
    draft head, CUDA graphs, overlap scheduler) gives plain --tp-size 1 decoding's greedy output.

    TP2 sums every layer's output over two shards: another float32 rounding than TP1's, which can
    flip a near-tie of these tiny random models (plain's top two logprobs 0.002 apart do occur).
    So a run may part from plain TP1 only where plain TP1 rates its token within 5e-3 of its own
    (``parting``, the rule the logprob checks above use); a wrong KV slot, window, vocabulary shard
    or acceptance parts at a decided position.  Every prompt is checked, one at a time and batched."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    models = tiny_models(checks=False)
    ids = prompts(8)
    with server(gpu_server_args(os.path.join(models, target), free_port()), tmp_path / "plain_tp1.log",
                env=FP32_ENV) as srv:
        refs = [logprob_request(srv.url, p, max_new_tokens=64)["meta_info"] for p in ids]
    single, batch, meta, lp, log = run(models, target, draft, tmp_path / "dflash_tp2.log", "overlap",
                                       extra=["--tp-size", "2"])
    assert "sglang-dflash worker ready" in log
    assert all(m["spec_verify_ct"] >= 1 for m in meta)
    parts = {f"{how} {i}": parting(out, ref, tol=5e-3)
             for how, outs in (("single", single), ("batch", batch)) for i, (out, ref) in enumerate(zip(outs, refs))}
    print("TP2 runs parting from plain TP1 at a near-tie:", {k: v for k, v in parts.items() if v is not None})
    assert greedy_logprob_error(lp, refs[1], tol=5e-3) <= 5e-3


def sample_over_http(url, n):
    """n first-3-token samples per sampling configuration, in mixed batches, plus greedy outputs."""
    counts = {name: Counter() for name in CONFIGS}
    per_chunk = 250
    greedy = None
    for c in range(-(-n // per_chunk)):
        names = [name for name in CONFIGS for _ in range(per_chunk)]
        params = [{**CONFIGS[name], "max_new_tokens": 3, "ignore_eos": True} for name in names]
        ids = [PROMPT] * len(names)
        if c == 0:
            ids += GREEDY_PROMPTS
            params += [{"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}] * len(GREEDY_PROMPTS)
        r = requests.post(url + "/generate", json={"input_ids": ids, "sampling_params": params}, timeout=600)
        r.raise_for_status()
        outs = r.json()
        for name, o in zip(names, outs):
            counts[name][tuple(o["output_ids"])] += 1
        if c == 0:
            greedy = [o["output_ids"] for o in outs[len(names):]]
    return counts, greedy


def test_gpu_sampling_has_the_targets_law(tmp_path):
    """The sampled path on the GPU (Triton rejection kernel, CUDA graphs): the same statistical
    comparison as tests/test_sampling_distribution.py, through the real server."""
    models = tiny_models(checks=False)
    target = markov_model(checks=False)
    # The reference is plain sampling non-overlapped: SGLang 0.5.17's overlapped scheduler feeds its
    # penalizers one token late (tests/test_sampling_distribution.py).  On 2026-11-27 an overlapped
    # reference made frequency+presence fail (p 2e-17, TV 0.090 > 0.071) and repetition marginal
    # (p 0.028) while temperature, top-p and top-k passed.
    plain_args = gpu_server_args(target, free_port(), max_bs=32) + ["--disable-overlap-schedule"]
    spec_args = gpu_server_args(target, free_port(), max_bs=32) + dflash_args(
        os.path.join(models, "qwen3-pi-oracle")) + ["--speculative-draft-attention-backend", "triton"]
    env = {**FP32_ENV, **ORACLE}
    n = int(os.environ.get("SGLANG_DFLASH_TEST_SAMPLES", "20000"))
    with server(plain_args, tmp_path / "plain.log", env=env) as srv:
        plain, plain_greedy = sample_over_http(srv.url, n)
    with server(spec_args, tmp_path / "dflash.log", env=env) as srv:
        spec, spec_greedy = sample_over_http(srv.url, n)
        log = srv.log()
    assert "DFLASH implementation: sglang-dflash" in log
    assert spec_greedy == plain_greedy
    for name in CONFIGS:
        p_value, tv, bound = compare(plain[name], spec[name])
        print(f"GPU {name}: chi-square p {p_value:.4f}, TV {tv:.4f} (bound {bound:.4f})")
        assert p_value > 0.01 and tv < bound, name
