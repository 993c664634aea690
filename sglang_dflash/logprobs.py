"""Log-probabilities of the emitted tokens, from the verify logits.

Each emitted token (accepted draft or bonus) is the target's choice at one verify position,
and that position's logits are the target's own next-token logits for the same prefix: the
numbers are the ones plain decoding returns, computed the way SGLang's sampler computes them
(log-softmax of the processed logits, temperature-scaled unless SGLANG_RETURN_ORIGINAL_LOGPROB,
clamped to the dtype's minimum) and handed over in the spec-v2 layout the scheduler reads:
``next_token_logprobs`` [bs, B] and per-position lists of bs * B rows.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from sglang.srt.environ import envs
from sglang.srt.layers.logprob_processor import LogprobResult, OutputLogprobProcessor


def emitted_logprobs(logits: torch.Tensor, out_tokens: torch.Tensor, temperatures: Optional[torch.Tensor],
                     top_logprobs_nums: List[int], token_ids_logprobs: List[Optional[List[int]]]) -> LogprobResult:
    """``logits`` [bs * B, V] (grammar-masked where constrained), ``out_tokens`` [bs, B] the token
    emitted at each position (positions past a request's committed run are padding and ignored
    by the scheduler), ``temperatures`` [bs, 1] or None for raw log-softmax.  Returns the token
    logprobs as [bs, B] and the optional top-k / token-id lists with one entry per position."""
    bs, width = out_tokens.shape
    if temperatures is not None:
        logits = logits / torch.repeat_interleave(temperatures.view(-1, 1).to(logits.dtype), width, dim=0)
    logprobs = torch.log_softmax(logits, dim=-1)
    result = OutputLogprobProcessor().compute_logprobs(
        logprobs,
        [k for k in top_logprobs_nums for _ in range(width)],
        [ids for ids in token_ids_logprobs for _ in range(width)],
        out_tokens.reshape(-1),
    )
    result.token_logprobs = result.token_logprobs.view(bs, width)
    return result


def fill_verify_logprobs(batch, logits_output, out_tokens: torch.Tensor) -> None:
    """Writes the emitted tokens' logprobs onto ``logits_output`` when the batch asks for them."""
    if not batch.return_logprob:
        return
    bs = out_tokens.shape[0]
    temperatures = None if envs.SGLANG_RETURN_ORIGINAL_LOGPROB.get() else batch.sampling_info.temperatures
    result = emitted_logprobs(
        logits_output.next_token_logits, out_tokens, temperatures,
        list(batch.top_logprobs_nums or [0] * bs), list(batch.token_ids_logprobs or [None] * bs),
    )
    result.write_output_to(logits_output)
