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


def attention_reference(q, k_ext, v_ext, k_buf, v_buf, qo_indptr, kv_indptr, kv_indices, causal, sm_scale,
                        logit_cap, window):
    """Per request: prefix keys (through kv_indices) then the block's own keys, at consecutive positions."""
    out = torch.zeros(q.shape[0], q.shape[1], v_ext.shape[2], dtype=torch.float64)
    group = q.shape[1] // k_ext.shape[1]
    for b in range(qo_indptr.numel() - 1):
        q0, q1 = int(qo_indptr[b]), int(qo_indptr[b + 1])
        idx = kv_indices[int(kv_indptr[b]):int(kv_indptr[b + 1])].long()
        keys = torch.cat([k_buf[idx], k_ext[q0:q1]]).double().repeat_interleave(group, dim=1)
        vals = torch.cat([v_buf[idx], v_ext[q0:q1]]).double().repeat_interleave(group, dim=1)
        n_prefix, n_q = idx.numel(), q1 - q0
        qpos = n_prefix + torch.arange(n_q)[:, None]
        kpos = torch.arange(n_prefix + n_q)[None, :]
        allowed = (kpos < n_prefix) | (kpos <= qpos) if causal else torch.ones(n_q, n_prefix + n_q, dtype=torch.bool)
        if window > 0:
            allowed &= (qpos - kpos) <= window
        s = torch.einsum("qhd,khd->hqk", q[q0:q1].double(), keys) * sm_scale
        if logit_cap > 0:
            s = logit_cap * torch.tanh(s / logit_cap)
        s = s.masked_fill(~allowed[None], float("-inf"))
        out[q0:q1] = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), vals)
    return out


ATTN_CASES = [  # bs, q heads, kv heads, head dim, block width, causal, window, cap
    (3, 4, 2, 32, 16, True, -1, 0.0),
    (2, 8, 1, 64, 16, False, -1, 0.0),
    (3, 4, 4, 32, 5, True, 20, 0.0),
    (2, 4, 2, 16, 16, True, 40, 30.0),
    (70, 4, 2, 16, 16, True, -1, 0.0),  # enough programs that the prefix is not split
]


def check_attention(case, config=None) -> None:
    """Our kernel (with ``config``, else its default launch) against the float64 reference."""
    from sglang_dflash.kernels.verify_attention import verify_attention

    bs, hq, hkv, d, width, causal, window, cap = case
    g = torch.Generator().manual_seed(hash(case) % 1000)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    prefix = torch.randint(0, 90, (bs,), generator=g)
    prefix[0] = 0  # a request with nothing committed yet
    slots = 400
    kv_indptr = torch.cat([torch.zeros(1, dtype=torch.int64), prefix.cumsum(0)])
    kv_indices = torch.cat([torch.randperm(slots, generator=g)[:int(n)] for n in prefix]).to(torch.int32)
    qo_indptr = torch.arange(bs + 1, dtype=torch.int64) * width
    t = bs * width
    mk = lambda *s: (torch.randn(*s, generator=g) * 2).to(dtype)  # noqa: E731
    q, k_ext, v_ext, k_buf, v_buf = mk(t, hq, d), mk(t, hkv, d), mk(t, hkv, d), mk(slots, hkv, d), mk(slots, hkv, d)
    ref = attention_reference(q, k_ext, v_ext, k_buf, v_buf, qo_indptr, kv_indptr, kv_indices, causal, d**-0.5,
                              cap, window)
    dev = lambda x: x.to(DEVICE)  # noqa: E731
    o = torch.empty(t, hq, d, dtype=dtype, device=DEVICE)
    verify_attention(dev(q), dev(k_ext), dev(v_ext), o, dev(k_buf), dev(v_buf), dev(qo_indptr),  # int64, as SGLang
                     dev(kv_indptr.to(torch.int32)), dev(kv_indices), causal, width, d**-0.5, cap, window,
                     config=config)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(o.double().cpu(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("case", ATTN_CASES)
def test_verify_attention_kernel_matches_reference(case):
    from sglang_dflash.kernels.verify_attention import plan

    check_attention(case)
    bs, hq, hkv, d, width = case[:5]
    if bs == 70:
        assert plan(bs, hq, hkv, width, d)[1] == 1
    else:
        assert plan(bs, hq, hkv, width, d)[1] > 1


# Launches a benchmark sweep may pick (heads per program, splits, keys per tile, warps, stages, K rows,
# prefetch, keys as rows):
# each must compute the same attention as the default.
SWEPT = [(1, 1, 16, 4, 1, False, True), (2, 2, 32, 4, 2, True, False), (4, 4, 64, 8, 3, True, True),
         (4, 1, 16, 4, 2, True, True), (2, 1, 32, 8, 2, False, True), (2, 1, 64, 4, 2, False, False, True),
         (4, 2, 16, 8, 3, False, False, True), (1, 4, 32, 4, 1, False, False, True)]


@pytest.mark.parametrize("launch", SWEPT)
def test_verify_attention_any_launch_matches_reference(launch):
    from sglang_dflash.kernels.verify_attention import KernelConfig

    check_attention((3, 8, 2, 32, 16, True, 20, 30.0), KernelConfig(*launch))


def test_verify_attention_refuses_an_invalid_launch():
    from sglang_dflash.kernels.verify_attention import KernelConfig

    with pytest.raises(ValueError, match="invalid KernelConfig"):
        check_attention((3, 8, 2, 32, 16, True, 20, 30.0), KernelConfig(3, 1, 16, 4, 1))
    with pytest.raises(ValueError, match="invalid KernelConfig"):
        check_attention((3, 8, 2, 32, 16, True, 20, 30.0), KernelConfig(2, 1, 64, 4, 2, False, True, True))


class SwaPool:
    """The part of SGLang's SWA KV pool the window planning uses: a full-slot -> SWA-slot map with
    SGLang's sentinel (-1 maps to -1) at the end."""

    def __init__(self, full_slots: int, g: torch.Generator) -> None:
        swa = torch.randperm(full_slots, generator=g)[: full_slots // 2]
        mapping = torch.full((full_slots + 1,), -1, dtype=torch.int64)
        mapping[swa] = torch.arange(swa.numel())
        self.full_to_swa_index_mapping = mapping.to(DEVICE)

    def translate_loc_from_full_to_swa(self, kv_indices: torch.Tensor) -> torch.Tensor:
        return self.full_to_swa_index_mapping[kv_indices]


@pytest.mark.parametrize("bs,window", [(1, 8), (5, 16), (12, 1024)])
def test_sync_free_window_translation_matches_sglang(bs, window):
    """Hook 9 (sglang_dflash/integration/hooks.py): a verify's graph planning translates the
    sliding window's KV slots without SGLang's host sync, to the same slots SGLang's own
    ``update_sliding_window_buffer`` (its Triton index kernel included) gives."""
    from sglang.srt.layers.attention import triton_backend

    from sglang_dflash.integration import hooks

    g = torch.Generator().manual_seed(bs * 1000 + window)
    full_slots, rows, ctx, max_tokens = 6000, 16, 2048, 16 * 16
    pool = SwaPool(full_slots, g)
    req_to_token = torch.randint(1, full_slots, (rows, ctx), generator=g, dtype=torch.int32).to(DEVICE)
    seq_lens = torch.randint(1, ctx, (bs,), generator=g).to(DEVICE)
    seq_lens[0] = min(window, ctx)  # a request exactly at the window
    req_pool_indices = torch.randperm(rows, generator=g)[:bs].to(DEVICE)
    stale = torch.randint(0, full_slots, (max_tokens * window,), generator=g).to(DEVICE)  # last step's leftovers
    results = []
    for planning in (False, True):
        indptr_buf, indices_buf = torch.zeros(rows + 1, dtype=torch.int32, device=DEVICE), stale.clone()
        hooks._PLANNING_VERIFY_GRAPH[0] = planning
        try:
            results.append(hooks._window_buffer(
                triton_backend.update_sliding_window_buffer, indptr_buf, req_to_token, window, seq_lens,
                req_pool_indices, bs, token_to_kv_pool=pool, window_kv_indices=indices_buf))
        finally:
            hooks._PLANNING_VERIFY_GRAPH[0] = False
    (ref_indptr, ref_indices, ref_lens, ref_start), (indptr, indices, lens, start) = results
    used = int(ref_indptr[bs])
    assert used == int(torch.minimum(seq_lens, torch.tensor(window, device=DEVICE)).sum())
    assert torch.equal(indptr, ref_indptr) and torch.equal(lens, ref_lens) and torch.equal(start, ref_start)
    assert torch.equal(indices[:used], ref_indices[:used])
    assert (indices[:used] >= -1).all() and not torch.equal(indices[:used], stale[:used])


def test_measured_launches_replace_the_default_for_their_shape(tmp_path, monkeypatch):
    """SGLANG_DFLASH_ATTN_LAUNCHES (a kernel sweep's winners): the listed shape and batch size get
    the listed launch, still computing the reference attention; anything else keeps the default."""
    import json

    from sglang_dflash.kernels import verify_attention as va

    case = (3, 8, 2, 32, 16, True, 20, 30.0)
    default = va.choose_config(3, 8, 2, 16, 32, 32)
    measured = va.KernelConfig(1, 2, 16, 4, 3, True)
    assert measured != default
    path = tmp_path / "launches.json"
    path.write_text(json.dumps({va.launch_key(3, 8, 2, 32): measured._asdict()}))
    monkeypatch.setenv(va.LAUNCHES_ENV, str(path))
    assert va.choose_config(3, 8, 2, 16, 32, 32) == measured
    assert va.choose_config(4, 8, 2, 16, 32, 32) == va.KernelConfig(*va.plan(4, 8, 2, 16, 32), 64, 4, 2)
    check_attention(case)
