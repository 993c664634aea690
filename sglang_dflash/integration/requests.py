"""Which requests our DFLASH worker serves; the rest are refused with a clear error (HTTP 400)."""

from __future__ import annotations

from typing import Optional

from sglang.srt.server_args import get_global_server_args

PREFIX = "DFLASH (sglang-dflash) cannot serve this request losslessly yet: "


def deterministic_inference() -> bool:
    from sglang.srt.runtime_context import get_exec

    return bool(get_exec().deterministic.enable_deterministic_inference)


def unsupported_reason(req) -> Optional[str]:
    """None when the request is served; otherwise the error message returned to the client."""
    sp = req.sampling_params
    if sp.max_new_tokens == 0:
        return None  # prompt scoring (e.g. the frontend's select) is a plain target prefill
    if any(getattr(sp, f, None) for f in ("json_schema", "regex", "ebnf", "structural_tag")) and (
        get_global_server_args().grammar_backend == "outlines"
    ):
        return PREFIX + "structured output needs a grammar backend that can roll back (xgrammar, llguidance)."
    if req.return_hidden_states:
        return PREFIX + "return_hidden_states is not supported."
    if getattr(req, "custom_logit_processor", None):
        return PREFIX + "custom_logit_processor is not supported."
    if getattr(req, "return_sampling_mask", False):
        return PREFIX + "return_sampling_mask is not supported."
    if sp.top_k > 1 and deterministic_inference():
        return PREFIX + ("sampling under --enable-deterministic-inference is not supported: plain decoding then "
                         "draws a hashed stream per (sampling_seed, position) that rejection sampling does not "
                         "reproduce (greedy requests are served).")
    # temperature, top_p, top_k, min_p, penalties, logit_bias, min_new_tokens: sglang_dflash/sampling.py
    return None
