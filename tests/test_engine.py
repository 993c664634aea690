"""The in-process ``sglang.Engine`` with our DFLASH gives the same greedy tokens as without it."""

import os

import pytest

from helpers import tiny_models
from workload import prompts

pytestmark = pytest.mark.slow


def run_engine(model: str, **spec) -> list[list[int]]:
    import sglang as sgl

    engine = sgl.Engine(model_path=model, device="cpu", attention_backend="torch_native", dtype="float32",
                        mem_fraction_static=0.05, max_total_tokens=16384, skip_tokenizer_init=True,
                        log_level="warning", **spec)
    try:
        outs = engine.generate(input_ids=prompts(8), sampling_params={"temperature": 0, "max_new_tokens": 64,
                                                                     "ignore_eos": True})
        return [o["output_ids"] for o in outs], [o["meta_info"].get("spec_verify_ct") for o in outs]
    finally:
        engine.shutdown()


def test_engine_dflash_equals_plain():
    models = tiny_models()
    plain, _ = run_engine(os.path.join(models, "gemma4"))
    spec, verify_cts = run_engine(os.path.join(models, "gemma4"), speculative_algorithm="DFLASH",
                                  speculative_draft_model_path=os.path.join(models, "gemma4-dflash"),
                                  speculative_num_draft_tokens=16)
    assert spec == plain
    assert all(ct and ct >= 1 for ct in verify_cts)
