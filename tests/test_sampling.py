"""The sampled acceptance rule and the target's processed distribution (sglang_dflash/sampling.py)
against exact probabilities and against SGLang's own penalizers and sampler."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from sglang.srt.layers.sampler import top_k_top_p_min_p_sampling_from_probs_torch
from sglang.srt.sampling import penaltylib
from sglang.srt.sampling.penaltylib.repetition_penalty import apply_scaling_penalties
from sglang.srt.sampling.sampling_params import SamplingParams

from sglang_dflash.acceptance import Acceptance, greedy_accept
from sglang_dflash.sampling import (
    params_from_requests, processed_logits, rejection_accept, sample_from, target_probs, wrong_accept_for_tests,
)

V = 6


NO_STOPS = SimpleNamespace(eos_token_id=None, additional_stop_token_ids=None)


def request(output_ids=(), tokenizer=NO_STOPS, **params):
    sp = SamplingParams(**params)
    sp.verify(64)
    return SimpleNamespace(sampling_params=sp, output_ids=list(output_ids), tokenizer=tokenizer)


def emitted(reqs):
    return torch.tensor([len(r.output_ids) for r in reqs])


def exact_two_token_law(p0, p1, d1):
    """P(o1, o2) when o1 ~ p0 and, only when o1 == d1 (the draft was right), o2 ~ p1 at the next
    block position; o2 = -1 stands for 'emitted later' (the step ended at o1)."""
    law = {}
    for a in range(V):
        if a == d1:
            for b in range(V):
                law[(a, b)] = float(p0[a] * p1[b])
        else:
            law[(a, -1)] = float(p0[a])
    return law


def run_rule(rule, n=200_000, seed=0):
    """n rows of one block [t, d1, d2] with fixed per-position distributions: the law of the
    first two emitted tokens by ``rule``, and the exact law."""
    g = torch.Generator().manual_seed(seed)
    p0 = torch.tensor([0.05, 0.5, 0.2, 0.0, 0.15, 0.1])
    p1 = torch.tensor([0.3, 0.0, 0.1, 0.35, 0.05, 0.2])
    p2 = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1])
    d1, d2 = 1, 3
    probs = torch.stack([p0, p1, p2]).expand(n, 3, V)
    block = torch.tensor([5, d1, d2]).expand(n, 3)
    acc = rule(block, probs, torch.rand((n, 3), generator=g))
    first = acc.out_tokens[:, 0]
    second = torch.where(acc.commit_lens >= 2, acc.out_tokens[:, 1], -1)
    law = exact_two_token_law(p0, p1, d1)
    observed = dict.fromkeys(law, 0)
    impossible = 0
    for (a, b), c in zip(*torch.unique(torch.stack([first, second], 1), dim=0, return_counts=True)):
        key = (int(a), int(b))
        if law.get(key, 0.0) > 0:
            observed[key] += int(c)
        else:
            impossible += int(c)
    keys = [k for k in law if law[k] > 0]
    obs = np.array([observed[k] for k in keys], dtype=np.float64)
    exp = np.array([law[k] for k in keys], dtype=np.float64)
    p = chisquare(obs, exp / exp.sum() * obs.sum()).pvalue
    return (0.0 if impossible else p), acc


def test_rejection_rule_emits_the_target_law():
    p, acc = run_rule(rejection_accept)
    assert p > 0.01, p
    # d1 (p0 = 0.5) is accepted about half the time, and then d2 (p1 = 0.35) a third of those
    assert abs(acc.accept_lens.float().mean().item() - (0.5 + 0.5 * 0.35)) < 0.01


def sample_and_compare(block, probs, u):
    """Draw the target's own token s_i ~ p_i at every position; keep d_{i+1} while it equals s_i,
    emit s_i at the first mismatch.  For a deterministic draft this is NOT a wrong rule: it is
    token-by-token target sampling, and P(keep d) = p(d) as in rejection sampling."""
    bs, width = block.shape
    s = torch.stack([sample_from(probs[:, i], u[:, i]) for i in range(width)], 1)
    accept_lens = (block[:, 1:] == s[:, :-1]).to(torch.int64).cumprod(1).sum(1)
    out = torch.cat([block[:, 1:], block[:, :1]], 1)
    out.scatter_(1, accept_lens[:, None], s.gather(1, accept_lens[:, None]))
    return Acceptance(accept_lens, accept_lens + 1, out.gather(1, accept_lens[:, None])[:, 0], out)


def test_sample_and_compare_is_exact_too():
    p, _ = run_rule(sample_and_compare)
    assert p > 0.01, p


def test_the_exactness_check_catches_a_wrong_rule():
    p, _ = run_rule(wrong_accept_for_tests)
    assert p < 1e-6, p


def test_greedy_rows_keep_the_greedy_rule():
    g = torch.Generator().manual_seed(3)
    bs, width, vocab = 6, 5, 64
    logits = torch.randn((bs, width, vocab), generator=g)
    reqs = [request(temperature=0) for _ in range(bs - 2)] + [request(temperature=0.8, top_p=0.9)] * 2
    top1 = logits.argmax(-1)
    block = torch.randint(0, vocab, (bs, width), generator=g)
    block[:, 1:3] = top1[:, :2]  # two right drafts, then (almost surely) a wrong one
    params = params_from_requests(reqs, vocab, "cpu", emitted(reqs))
    acc = rejection_accept(block, target_probs(processed_logits(logits, block[:, 1:], params), params),
                           torch.rand((bs, width), generator=g))
    ref = greedy_accept(block[:4], top1[:4])
    assert torch.equal(acc.accept_lens[:4], ref.accept_lens) and torch.equal(acc.bonus[:4], ref.bonus)


class StandInBatch:
    """What SGLang's penalizers read from a ScheduleBatch: its requests and device."""

    def __init__(self, reqs):
        self.reqs, self.device = reqs, "cpu"


def test_penalties_match_sglangs_penalizers():
    """At block position i, SGLang's own penalizers, fed the output so far plus d1 .. di one
    token at a time (as plain decoding feeds them), give the same logits as processed_logits."""
    g = torch.Generator().manual_seed(5)
    vocab, width = 64, 6
    tok = SimpleNamespace(eos_token_id=7, additional_stop_token_ids={9})
    reqs = [
        request([3, 3, 5], temperature=0.7, frequency_penalty=0.4, presence_penalty=0.3, repetition_penalty=1.3),
        request([0, 13, 2], temperature=1.0, repetition_penalty=0.8, logit_bias={"11": 2.5, "3": -1.0}),
        request([1, 2, 3], tokenizer=tok, temperature=0.9, min_new_tokens=6, stop_token_ids=[12],
                presence_penalty=-0.5),
        request([8, 8, 1], temperature=0),
    ]
    logits = torch.randn((len(reqs), width, vocab), generator=g) * 3
    drafts = torch.randint(0, 14, (len(reqs), width - 1), generator=g)
    params = params_from_requests(reqs, vocab, "cpu", emitted(reqs))
    got = processed_logits(logits, drafts, params)

    batch = StandInBatch(reqs)  # SGLang holds it weakly: keep the reference for the whole test
    orch = penaltylib.BatchedPenalizerOrchestrator(vocab_size=vocab, batch=batch, penalizers={
        penaltylib.BatchedFrequencyPenalizer, penaltylib.BatchedMinNewTokensPenalizer,
        penaltylib.BatchedPresencePenalizer, penaltylib.BatchedRepetitionPenalizer})
    for step in range(3):  # the committed output, token by token
        orch.cumulate_output_tokens(torch.tensor([r.output_ids[step] for r in reqs]))
    for i in range(width):
        expect = logits[:, i].clone()
        additive = torch.zeros_like(expect)
        orch.accumulate_additive_penalties(additive)
        expect += additive
        scaling = orch.accumulate_scaling_penalties()
        if scaling is not None:
            apply_scaling_penalties(expect, scaling)
        expect += params.logit_bias
        assert torch.allclose(got[:, i], expect, atol=1e-5), i
        if i < width - 1:
            orch.cumulate_output_tokens(drafts[:, i])
    assert torch.isinf(got[2, :3, [7, 9, 12]]).all() and not torch.isinf(got[2, 3:]).any()  # min_new_tokens


@pytest.mark.parametrize("params", [
    {"temperature": 0.7, "top_k": 3},
    {"temperature": 1.3, "top_p": 0.7},
    {"temperature": 1.0, "min_p": 0.2},
    {"temperature": 0.9, "top_k": 5, "top_p": 0.8, "min_p": 0.1},
])
def test_target_probs_is_what_sglangs_sampler_draws_from(params):
    """SGLang's own top-k/top-p/min-p sampler (pytorch backend), run 40,000 times on one row,
    draws from the law target_probs computes (chi-square), and never outside its support."""
    torch.manual_seed(11)
    vocab, n = 12, 40_000
    logits = torch.randn((1, 1, vocab), generator=torch.Generator().manual_seed(7)) * 1.5
    req = request(**params)
    ours = target_probs(processed_logits(logits, torch.zeros((1, 0), dtype=torch.int64),
                                         params_from_requests([req], vocab, "cpu", emitted([req]))),
                        params_from_requests([req], vocab, "cpu", emitted([req])))[0, 0].double()
    sp = req.sampling_params
    probs = torch.softmax(logits[0] / sp.temperature, dim=-1).expand(n, vocab).contiguous()
    drawn = top_k_top_p_min_p_sampling_from_probs_torch(
        probs, torch.full((n,), sp.top_k), torch.full((n,), sp.top_p), torch.full((n,), sp.min_p),
        sp.min_p > 0, None, None)
    counts = torch.bincount(drawn.long(), minlength=vocab).double()
    support = ours > 0
    assert counts[~support].sum() == 0
    assert support.sum() < vocab  # the filters did cut something
    p = chisquare(counts[support].numpy(), (ours[support] / ours[support].sum() * n).numpy()).pvalue
    assert p > 0.01, (p, counts, ours)


def test_pending_outputs_add_exactly_the_tokens_the_host_has_not_seen():
    """Overlapped scheduling: the previous forward's committed tokens join the penalty counts of
    a request whose host output did not grow since that forward, and only of such a request."""
    from types import SimpleNamespace

    from sglang_dflash.pending_output import PendingOutputs

    a = SimpleNamespace(rid="a", output_ids=[5])
    b = SimpleNamespace(rid="b", output_ids=[6, 7])
    c = SimpleNamespace(rid="c", output_ids=[8])
    pend = PendingOutputs()
    # a: 3, b: 1; the positions past a commit hold anything, out-of-range ids too
    pend.record([a, b], [1, 2], torch.tensor([[1, 2, 2, -1], [3, 9, 10**6, 9]]), torch.tensor([3, 1]))
    b.output_ids.append(3)  # the host took in b's result, not a's; c was not in that forward
    counts = torch.zeros((3, 10))
    pend.add_counts([b, a, c], counts, wanted=[True, True, True])
    expect = torch.zeros((3, 10))
    expect[1, 1], expect[1, 2] = 1, 2
    assert torch.equal(counts, expect)
    counts.zero_()
    pend.add_counts([a], counts[:1], wanted=[False])  # no penalties: nothing to count
    assert counts.sum() == 0
