"""The pure pieces of the worker against plain-Python references."""

import random

import pytest
import torch

from sglang_dflash.acceptance import greedy_accept
from sglang_dflash.block import prepare_block
from sglang_dflash.kv_cache import reservation_lengths


def reference_accept(block, top1):
    """Token by token, as greedy decoding of the target would emit them."""
    out = []
    for i in range(1, len(block)):
        if block[i] != top1[i - 1]:
            return out, top1[i - 1]
        out.append(block[i])
    return out, top1[-1]


@pytest.mark.parametrize("width", [2, 5, 16])
def test_greedy_accept_matches_reference(width):
    rng = random.Random(width)
    rows = 64
    block = torch.randint(0, 4, (rows, width))
    top1 = torch.randint(0, 4, (rows, width))
    # Make long accepted runs common: copy the target's choice with high probability.
    for r in range(rows):
        for i in range(1, width):
            if rng.random() < 0.8:
                block[r, i] = top1[r, i - 1]
    acc = greedy_accept(block, top1)
    for r in range(rows):
        accepted, bonus = reference_accept(block[r].tolist(), top1[r].tolist())
        a = len(accepted)
        assert acc.accept_lens[r] == a
        assert acc.commit_lens[r] == a + 1
        assert acc.bonus[r] == bonus
        assert acc.out_tokens[r, : a + 1].tolist() == accepted + [bonus]


def test_greedy_accept_extremes():
    top1 = torch.tensor([[7, 8, 9, 10]])
    all_right = greedy_accept(torch.tensor([[1, 7, 8, 9]]), top1)
    assert all_right.commit_lens.tolist() == [4] and all_right.out_tokens[0].tolist() == [7, 8, 9, 10]
    first_wrong = greedy_accept(torch.tensor([[1, 6, 8, 9]]), top1)
    assert first_wrong.commit_lens.tolist() == [1] and first_wrong.bonus.tolist() == [7]


def test_prepare_block():
    req_to_token = torch.arange(4 * 40).view(4, 40) + 1000
    seq_lens = torch.tensor([3, 0, 17])
    pools = torch.tensor([2, 0, 3])
    block = prepare_block(torch.tensor([11, 12, 13]), seq_lens, pools, req_to_token, mask_token_id=5, block_size=4)
    for r in range(3):
        L = int(seq_lens[r])
        assert block.token_ids[r].tolist() == [[11, 12, 13][r], 5, 5, 5]
        assert block.positions[r].tolist() == list(range(L, L + 4))
        assert block.cache_locs[r].tolist() == [int(req_to_token[pools[r], p]) for p in range(L, L + 4)]


def test_reservation_never_shrinks_and_covers_block():
    assert reservation_lengths([10, 10, 5], [10, 40, 21], 16) == [26, 40, 21]


def test_sharded_greedy_head_equals_full_argmax():
    """Each tensor-parallel rank's best logit and token id, combined, is the full vocabulary's argmax
    (ties included: values are drawn from a small set so equal maxima across shards are common)."""
    from sglang_dflash.drafting import combine_shard_argmax

    g = torch.Generator().manual_seed(7)
    vocab, tp, n = 96, 4, 500
    logits = torch.randint(0, 6, (n, vocab), generator=g).float()
    shards = logits.view(n, tp, vocab // tp)
    values, local = shards.max(dim=-1)  # [n, tp]
    ids = local + torch.arange(tp) * (vocab // tp)
    got = combine_shard_argmax(values.t(), ids.t())
    best = logits.max(dim=-1, keepdim=True).values
    first = (logits == best).to(torch.int8).argmax(dim=-1)
    assert torch.equal(got, first)


def test_draft_head_ranges_and_padding():
    from types import SimpleNamespace

    from sglang_dflash.drafting import draft_head_of, greedy_draft_tokens

    w = torch.zeros(64, 4)
    whole = draft_head_of(SimpleNamespace(weight=w), 60, 0, 1)
    assert (whole.vocab_start, whole.num_valid, whole.sharded) == (0, 60, False)
    tied_slice = draft_head_of(SimpleNamespace(weight=w[:32]), 60, 1, 2)  # rank 1 of 2, no metadata
    assert (tied_slice.vocab_start, tied_slice.num_valid, tied_slice.sharded) == (32, 28, True)
    meta = SimpleNamespace(org_vocab_start_index=30, num_org_elements=30)
    assert draft_head_of(SimpleNamespace(weight=w[:32], shard_indices=meta), 60, 1, 2)[1:] == (30, 30, True)
    # padding rows (here the best logit) are never proposed
    w = torch.zeros(64, 4)
    w[:60, 0] = -1.0
    hidden = torch.ones(1, 3, 4)
    assert greedy_draft_tokens(hidden, whole._replace(weight=w)).max() < 60


def test_host_length_bound_covers_a_step_still_running():
    """Under the overlap scheduler with a backend that keeps no host lengths (triton on CUDA), the
    planning lengths are the scheduler's lagging count plus one block: never below the device's
    true length, which the step still running can raise by at most one block."""
    from types import SimpleNamespace

    from sglang_dflash.worker import DFlashWorker

    overlap = SimpleNamespace(lookahead=32, block_size=16)
    reqs = [SimpleNamespace(kv_committed_len=n) for n in (5, 40)]
    bound = DFlashWorker.host_seq_lens(overlap, SimpleNamespace(seq_lens_cpu=None, reqs=reqs))
    true_lens = torch.tensor([5 + 16, 40 + 1])  # the running step committed a whole block / one token
    assert torch.equal(bound, torch.tensor([21, 56])) and bool((bound >= true_lens).all())
    exact = torch.tensor([7, 9])  # a host mirror, when the backend keeps one, is used as it is
    assert DFlashWorker.host_seq_lens(overlap, SimpleNamespace(seq_lens_cpu=exact, reqs=reqs)) is exact
