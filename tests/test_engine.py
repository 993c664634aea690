"""The in-process ``sglang.Engine`` with our DFLASH gives the same greedy tokens as without it, under
either scheduler."""

import os

import pytest

from helpers import SCHEDULERS, check_scheduler, tiny_models
from workload import prompts

pytestmark = pytest.mark.slow


def engine(model: str, **kw):
    import sglang as sgl

    eng = sgl.Engine(model_path=model, device="cpu", attention_backend="torch_native", dtype="float32",
                     mem_fraction_static=0.05, max_total_tokens=16384, skip_tokenizer_init=True,
                     log_level="warning", **kw)
    if "disable_overlap_schedule" in kw:
        try:
            check_scheduler(eng.get_server_info(), "no-overlap" if kw["disable_overlap_schedule"] else "overlap")
        except AssertionError:
            eng.shutdown()
            raise
    return eng


def run_engine(model: str, **spec) -> list[list[int]]:
    eng = engine(model, **spec)
    try:
        outs = eng.generate(input_ids=prompts(8), sampling_params={"temperature": 0, "max_new_tokens": 64,
                                                                  "ignore_eos": True})
        return [o["output_ids"] for o in outs], [o["meta_info"].get("spec_verify_ct") for o in outs]
    finally:
        eng.shutdown()


def test_engine_dflash_equals_plain():
    models = tiny_models()
    plain, _ = run_engine(os.path.join(models, "gemma4"))
    for scheduler in SCHEDULERS:
        spec, verify_cts = run_engine(os.path.join(models, "gemma4"), speculative_algorithm="DFLASH",
                                      speculative_draft_model_path=os.path.join(models, "gemma4-dflash"),
                                      speculative_num_draft_tokens=16,
                                      disable_overlap_schedule=scheduler == "no-overlap")
        assert spec == plain, scheduler
        assert all(ct and ct >= 1 for ct in verify_cts)


def near_context_limit(model: str, **spec) -> list:
    """Prompts whose block would run past a 128-token context: same tokens, same finish, same refusal."""
    eng = engine(model, context_length=128, **spec)
    out = []
    try:
        for plen, new in [(100, 27), (120, 7), (126, 1)]:
            try:
                o = eng.generate(input_ids=[3 + (j * 7) % 1500 for j in range(plen)],
                                 sampling_params={"temperature": 0, "max_new_tokens": new, "ignore_eos": True})
                out.append((o["output_ids"], o["meta_info"]["finish_reason"]))
            except Exception as e:  # noqa: BLE001 - the refusal itself is compared
                out.append(("refused", str(e)))
    finally:
        eng.shutdown()
    return out


def test_context_limit_is_handled_like_plain():
    models = tiny_models()
    plain = near_context_limit(os.path.join(models, "qwen3"))
    for scheduler in SCHEDULERS:  # overlap: the reservation of two blocks must stay inside the token table
        spec = near_context_limit(os.path.join(models, "qwen3"), speculative_algorithm="DFLASH",
                                  speculative_draft_model_path=os.path.join(models, "qwen3-dflash"),
                                  speculative_num_draft_tokens=16, disable_overlap_schedule=scheduler == "no-overlap")
        assert spec == plain, scheduler
    assert plain[-1][0] == "refused" and "exceeds the maximum allowed length" in plain[-1][1]
