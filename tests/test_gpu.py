"""On the GPU machine: our DFLASH with CUDA graphs (draft and verify) through the real server,
greedy output equal to plain decoding for the tiny Qwen3 and Gemma-4 pairs (float32)."""

import os
import re

import pytest

from helpers import dflash_args, free_port, gpu_server_args, server, tiny_models
from workload import LOGPROB_KEYS, generate, logprob_error, logprob_request, prompts

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

PAIRS = [("qwen3", "qwen3-dflash"), ("gemma4", "gemma4-dflash")]
# float32 on a GPU needs SGLang's plain-PyTorch op forwards (tests/gpu_fp32/sitecustomize.py).
FP32_ENV = {"SGLANG_DFLASH_TEST_NATIVE_OPS": "1",
            "PYTHONPATH": os.path.join(os.path.dirname(__file__), "gpu_fp32") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(models, target, draft, log_path, spec):
    args = gpu_server_args(os.path.join(models, target), free_port())
    if spec:
        args += dflash_args(os.path.join(models, draft)) + ["--speculative-draft-attention-backend", "triton"]
    ids = prompts(8)
    with server(args, log_path, env=FP32_ENV) as srv:
        single = [generate(srv.url, p)["output_ids"] for p in ids]
        batch = generate(srv.url, ids)
        logprobs = logprob_request(srv.url, ids[1])["meta_info"]
        log = srv.log()
    return single, [o["output_ids"] for o in batch], [o["meta_info"] for o in batch], logprobs, log


@pytest.mark.parametrize("target,draft", PAIRS)
def test_gpu_dflash_equals_plain_with_cuda_graphs(target, draft, tmp_path):
    models = tiny_models(checks=False)  # the GPU machine's transformers is newer than the CPU env's
    p_single, p_batch, _, p_lp, _ = run(models, target, draft, tmp_path / "plain.log", spec=False)
    s_single, s_batch, meta, s_lp, log = run(models, target, draft, tmp_path / "dflash.log", spec=True)
    assert "DFLASH implementation: sglang-dflash" in log
    assert s_single == p_single
    assert s_batch == p_batch
    assert all(m["spec_verify_ct"] >= 1 for m in meta)
    for key in LOGPROB_KEYS:  # token and top-5 logprobs from the verify logits, as plain decoding's
        assert logprob_error(s_lp.get(key), p_lp.get(key)) <= 1e-4, key
    # Both the target (verify) and the draft captured CUDA graphs; decode steps replayed them.
    assert set(re.findall(r"Capture (\w+) verify CUDA graph end", log)) == {"draft", "target"}, log[-3000:]
    assert "cuda graph: True" in log
