"""Which requests our DFLASH worker serves; the rest are refused with a clear error (HTTP 400)."""

from __future__ import annotations

from typing import Optional

from sglang.srt.server_args import get_global_server_args

PREFIX = "DFLASH (sglang-dflash) cannot serve this request losslessly yet: "


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
    if sp.top_k != 1:
        return PREFIX + "only greedy decoding (temperature 0) is supported; got temperature > 0."
    if sp.frequency_penalty or sp.presence_penalty or sp.repetition_penalty != 1.0:
        return PREFIX + "frequency/presence/repetition penalties are not supported."
    if sp.logit_bias:
        return PREFIX + "logit_bias is not supported."
    if sp.min_new_tokens:
        return PREFIX + "min_new_tokens is not supported."
    return None
