"""Lossless greedy decoding through the real server: DFLASH output == the same server without
speculation, token for token, for every API, batching mode and target form, under the overlap
scheduler and the non-overlapped one."""

import os

import pytest
import requests

from helpers import SCHEDULERS, check_scheduler, cpu_server_args, dflash_args, free_port, server, tiny_models
from workload import LOGPROB_KEYS, collect, generate, logprob_error, logprob_request, prompts

pytestmark = pytest.mark.slow

# (target, draft, extra server flags, extra env).  prompts() has 150+ token prompts, so a 64-token
# prefill chunk splits them.  SGLang's paged allocator is a Triton kernel: on a CPU it runs in
# Triton's interpreter.  The multimodal Gemma-4's startup warmup sends an image, which the CPU
# environment's torchvision stand-in cannot decode: its servers skip the warmup.
CASES = {
    "qwen3": ("qwen3", "qwen3-dflash", ["--chunked-prefill-size", "64"], {}),
    "qwen3-page4": ("qwen3", "qwen3-dflash", ["--page-size", "4"], {"TRITON_INTERPRET": "1"}),
    "gemma4": ("gemma4", "gemma4-dflash", [], {}),
    "gemma4-mm": ("gemma4-mm", "gemma4-dflash", ["--skip-server-warmup"], {}),
}


def outputs(models, target, draft, extra, env, log_path, scheduler=None):
    """The workload's results from a plain server, or from a DFLASH one under ``scheduler``."""
    args = cpu_server_args(os.path.join(models, target), free_port()) + extra
    if scheduler:
        args += dflash_args(os.path.join(models, draft)) + SCHEDULERS[scheduler]
    with server(args, log_path, env=env) as srv:
        res = collect(srv.url, prompts())
        info = requests.get(srv.url + "/get_server_info", timeout=30).json()
        meta = generate(srv.url, prompts(1)[0])["meta_info"]
        logprobs = logprob_request(srv.url, prompts(2)[1])["meta_info"]
        log = srv.log()
    return res, info, meta, logprobs, log


@pytest.mark.parametrize("case", list(CASES))
def test_dflash_equals_plain(case, tmp_path):
    models = tiny_models()
    target, draft, extra, env = CASES[case]
    plain, _, _, plain_lp, _ = outputs(models, target, draft, extra, env, tmp_path / "plain.log")
    for scheduler in SCHEDULERS:
        spec = outputs(models, target, draft, extra, env, tmp_path / f"dflash-{scheduler}.log", scheduler)
        check_scheduler(spec[1], scheduler)
        check_equal(f"{case}/{scheduler}", plain, plain_lp, *spec)


def check_equal(case, plain, plain_lp, spec, info, meta, spec_lp, log):
    assert "DFLASH implementation: sglang-dflash" in log
    assert "sglang-dflash worker ready" in log
    for scenario in plain:
        assert spec[scenario] == plain[scenario], f"{case}: {scenario} differs"
    # Speculative statistics as SGLang reports them.
    assert meta["spec_verify_ct"] >= 1 and meta["completion_tokens"] == 64
    assert meta["spec_accept_length"] == pytest.approx(meta["completion_tokens"] / meta["spec_verify_ct"], rel=0.05)
    assert info["internal_states"][0]["avg_spec_accept_length"] >= 1.0
    # Logprobs (token and top-5, prompt and output) are the target's own, as plain decoding's.
    for key in LOGPROB_KEYS:
        assert logprob_error(spec_lp.get(key), plain_lp.get(key)) <= 1e-4, (case, key)
    assert len(spec_lp["output_top_logprobs"]) == 24 and len(spec_lp["input_token_logprobs"]) == len(prompts(2)[1]) - 3
