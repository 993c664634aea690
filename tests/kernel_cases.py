"""Triton kernels against their plain-PyTorch references.  Run by test_kernels.py in a fresh
interpreter: on a CPU with TRITON_INTERPRET=1 set before Triton is first imported (Triton's own
standard library is then interpreted too), on a GPU compiled."""

import pytest
import torch

from sglang_dflash.acceptance import greedy_accept
from sglang_dflash.block import prepare_block
from sglang_dflash.kernels import accept, block_prep, sample_accept
from sglang_dflash.sampling import rejection_accept

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("width", [2, 7, 16])
def test_prepare_block_kernel_matches_reference(width):
    g = torch.Generator().manual_seed(width)
    bs, pools, ctx = 9, 12, 200
    req_to_token = torch.randperm(pools * ctx, generator=g).view(pools, ctx).to(torch.int32).to(DEVICE)
    seq_lens = torch.randint(0, ctx - width, (bs,), generator=g).to(DEVICE)
    pool_idx = torch.randperm(pools, generator=g)[:bs].to(DEVICE)
    bonus = torch.randint(0, 5000, (bs,), generator=g).to(DEVICE)
    ref = prepare_block(bonus, seq_lens, pool_idx, req_to_token, 4, width)
    got = block_prep.prepare_block_triton(bonus, seq_lens, pool_idx, req_to_token, 4, width)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


@pytest.mark.parametrize("width", [2, 5, 16])
def test_greedy_accept_kernel_matches_reference(width):
    g = torch.Generator().manual_seed(100 + width)
    bs = 64
    top1 = torch.randint(0, 3, (bs, width), generator=g)
    block = torch.randint(0, 3, (bs, width), generator=g)
    copy = torch.rand((bs, width), generator=g) < 0.8  # long accepted runs are common
    block[:, 1:] = torch.where(copy[:, 1:], top1[:, :-1], block[:, 1:])
    ref = greedy_accept(block, top1)
    got = accept.greedy_accept_triton(block.to(DEVICE), top1.to(DEVICE))
    assert torch.equal(got.accept_lens.cpu(), ref.accept_lens)
    assert torch.equal(got.commit_lens.cpu(), ref.commit_lens)
    assert torch.equal(got.bonus.cpu(), ref.bonus)
    for r in range(bs):  # the committed part of each row; what follows it is padding
        n = int(ref.commit_lens[r])
        assert got.out_tokens[r, :n].tolist() == ref.out_tokens[r, :n].tolist()


def dyadic_probs(g: torch.Generator, rows: int, vocab: int, support: int) -> torch.Tensor:
    """Distributions with multiples of 1/64 on a few tokens: every partial sum is exact in
    float32, so the kernel's chunked running sums and the reference's cumsum agree bit for bit."""
    probs = torch.zeros((rows, vocab))
    for r in range(rows):
        cuts = torch.sort(torch.randperm(63, generator=g)[: support - 1] + 1).values
        mass = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([64])])).float() / 64
        probs[r, torch.randperm(vocab, generator=g)[:support]] = mass
    return probs


@pytest.mark.parametrize("width,vocab", [(2, 50), (5, 1500), (16, 3000)])
def test_sample_accept_kernel_matches_reference(width, vocab):
    g = torch.Generator().manual_seed(200 + width)
    bs = 48
    probs = dyadic_probs(g, bs * width, vocab, support=6).view(bs, width, vocab)
    probs[:5] = 0  # greedy rows: one-hot distributions
    probs[:5].scatter_(2, torch.randint(0, vocab, (5, width, 1), generator=g), 1.0)
    likely = probs.argmax(dim=-1)
    block = torch.randint(0, vocab, (bs, width), generator=g)
    block[:, 1:] = torch.where(torch.rand((bs, width - 1), generator=g) < 0.8, likely[:, :-1], block[:, 1:])
    u = torch.rand((bs, width), generator=g)
    ref = rejection_accept(block, probs, u)
    got = sample_accept.sample_accept_triton(block.to(DEVICE), probs.to(DEVICE), u.to(DEVICE))
    assert torch.equal(got.accept_lens.cpu(), ref.accept_lens)
    assert 0 < int(ref.accept_lens.sum()) and bool((ref.accept_lens < width - 1).any())  # both outcomes occur
    assert torch.equal(got.commit_lens.cpu(), ref.commit_lens)
    assert torch.equal(got.bonus.cpu(), ref.bonus)
    for r in range(bs):
        n = int(ref.commit_lens[r])
        assert got.out_tokens[r, :n].tolist() == ref.out_tokens[r, :n].tolist()


def test_empty_batch():
    empty = torch.empty((0,), dtype=torch.int64, device=DEVICE)
    blk = block_prep.prepare_block_triton(empty, empty, empty, torch.zeros((1, 8), dtype=torch.int32, device=DEVICE), 4, 8)
    assert blk.token_ids.shape == (0, 8)
    acc = accept.greedy_accept_triton(torch.empty((0, 8), dtype=torch.int64, device=DEVICE),
                                      torch.empty((0, 8), dtype=torch.int64, device=DEVICE))
    assert acc.commit_lens.shape == (0,)
    acc = sample_accept.sample_accept_triton(torch.empty((0, 8), dtype=torch.int64, device=DEVICE),
                                             torch.empty((0, 8, 32), device=DEVICE), torch.empty((0, 8), device=DEVICE))
    assert acc.commit_lens.shape == (0,)
