"""Hook 5b (``integration/hooks._update_finish_state``) on SGLang's real ``Req``: a verify step's run
of tokens finishes a request where plain decoding, one token a step, would have -- also when an
abort is pending in that step (the soak once saw an aborted request come back with 66 tokens
against max_new_tokens 64, 2 past plain's limit)."""

from array import array

import pytest

from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH, FINISH_MATCHED_TOKEN, Req
from sglang.srt.sampling.sampling_params import SamplingParams

from sglang_dflash.integration.hooks import _update_finish_state

EOS = 7


def request(max_new_tokens: int, output: list[int], **params) -> Req:
    sampling = SamplingParams(max_new_tokens=max_new_tokens, **params)
    sampling.normalize(None)  # as the tokenizer manager does before a request reaches the scheduler
    req = Req("r", "", array("q", [1, 2, 3]), sampling, eos_token_ids={EOS}, vocab_size=100)
    req.output_ids.extend(output)
    return req


def commit(req: Req, run: list[int], abort: bool = False) -> list[int]:
    """One verify step's commit as the scheduler applies it; returns the request's output."""
    req.output_ids.extend(run)
    if abort:
        req.to_finish = FINISH_ABORT()
    _update_finish_state(Req.update_finish_state, req, len(run))
    return list(req.output_ids_through_stop)


def plain(req: Req, run: list[int]) -> list[int]:
    """The same tokens through SGLang's own check, one per step: what plain decoding outputs."""
    for token in run:
        if req.finished():
            break
        req.output_ids.append(token)
        req.update_finish_state(1)
    return list(req.output_ids_through_stop)


@pytest.mark.parametrize("abort", [False, True])
def test_run_past_max_new_tokens_stops_at_the_limit(abort):
    req = request(6, [10, 11, 12])
    out = commit(req, [13, 14, 15, 16, 17], abort=abort)
    assert out == plain(request(6, [10, 11, 12]), [13, 14, 15, 16, 17]) == [10, 11, 12, 13, 14, 15]
    assert isinstance(req.finished_reason, FINISH_LENGTH)


@pytest.mark.parametrize("abort", [False, True])
def test_run_through_a_stop_token_stops_at_it(abort):
    req = request(64, [10])
    out = commit(req, [11, EOS, 12, 13], abort=abort)
    assert out == plain(request(64, [10]), [11, EOS, 12, 13]) == [10, 11, EOS]
    assert isinstance(req.finished_reason, FINISH_MATCHED_TOKEN)


def test_pending_abort_keeps_a_run_that_meets_no_finish_condition():
    req = request(64, [10])
    assert commit(req, [11, 12, 13], abort=True) == [10, 11, 12, 13]
    assert isinstance(req.finished_reason, FINISH_ABORT) and req.to_finish is None


def test_no_abort_no_limit_is_sglangs_own_check():
    req = request(64, [10])
    assert commit(req, [11, 12, 13]) == [10, 11, 12, 13]
    assert not req.finished()
