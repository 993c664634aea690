"""Split-KV attention for short fixed-width extends: the DFLASH verify (and draft) block.

SGLang's Triton extend kernel gives each (request, query head) one program that walks the whole
prefix serially.  A 16-token block at batch 1 is then 32-64 programs on a 132-SM GPU, each
streaming the full prefix: ~60 us per layer at a 512-token context for Gemma-4-31B, ~4 ms of a
~23 ms verify.  Here every program takes all block queries of a few query heads sharing one KV
head (GQA rows stacked into one tile, so each K/V tile is read once for all of them) over one
slice of the prefix; a second kernel merges the slices by their log-sum-exp.  Same inputs as
SGLang's ``extend_attention_fwd`` (prefix through ``kv_indices`` into the KV buffers, the block's
own K/V passed in), same masks: causal within the block, and a sliding window where a query at
absolute position p sees keys at p - window .. p.
"""

from __future__ import annotations

import functools
import json
import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

_TARGET_PROGRAMS = 132  # one wave on an H100/H200 (132 SMs): best of 66..1056 at Gemma-4-31B shapes
_MAX_SPLITS = 16
_MAX_TILE = 16384  # rows x value dims of one program's fp32 accumulator


@triton.jit
def _split_kernel(
    Q, K_ext, V_ext, K_buf, V_buf, qo_indptr, kv_indptr, kv_indices, O, Part_acc, Part_ml,
    sm_scale, logit_cap,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kbs, stride_kbh, stride_vbs, stride_vbh, stride_ot, stride_oh,
    GROUP: tl.constexpr, HG: tl.constexpr, E_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, HAS_CAP: tl.constexpr, K_ROWS: tl.constexpr,
    PREFETCH: tl.constexpr, KEYS_AS_ROWS: tl.constexpr,
):
    b = tl.program_id(0)
    h0 = tl.program_id(1) * HG
    split = tl.program_id(2)
    kvh = h0 // GROUP
    # SGLang hands int64 query and int32 KV offsets; one width keeps the loop counters typed alike
    q_start = tl.load(qo_indptr + b).to(tl.int32)
    n_q = tl.load(qo_indptr + b + 1).to(tl.int32) - q_start
    kv_start = tl.load(kv_indptr + b).to(tl.int32)
    n_prefix = tl.load(kv_indptr + b + 1).to(tl.int32) - kv_start

    rows = tl.arange(0, E_PAD * HG)
    qi = rows // HG  # query position in the block
    head = h0 + rows % HG
    row_ok = qi < n_q
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < D
    dv_ok = offs_dv < DV
    q = tl.load(Q + (q_start + qi)[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([E_PAD * HG], float("-inf"), tl.float32)
    l_i = tl.zeros([E_PAD * HG], tl.float32)
    acc = tl.zeros([E_PAD * HG, BLOCK_DV], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)

    # This program's slice of the prefix, in whole tiles.
    chunk = tl.cdiv(tl.cdiv(n_prefix, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, n_prefix)
    if PREFETCH:
        loc = tl.load(kv_indices + kv_start + lo + offs_n, mask=lo + offs_n < hi, other=0).to(tl.int64)
    if KEYS_AS_ROWS:
        # Scores transposed, keys x query rows: the MMA's row count becomes BLOCK_N (>= 64 lets
        # Hopper use warpgroup MMAs), not the 16-32 query rows of one program.
        acc_t = tl.zeros([BLOCK_DV, E_PAD * HG], tl.float32)
        q_t = tl.trans(q)
        for start in range(lo, hi, BLOCK_N):
            n = start + offs_n
            n_ok = n < hi
            loc = tl.load(kv_indices + kv_start + n, mask=n_ok, other=0).to(tl.int64)
            k = tl.load(K_buf + loc[:, None] * stride_kbs + kvh * stride_kbh + offs_d[None, :],
                        mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            v = tl.load(V_buf + loc[:, None] * stride_vbs + kvh * stride_vbh + offs_dv[None, :],
                        mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
            s_t = tl.dot(k, q_t) * sm_scale
            if HAS_CAP:
                s_t = logit_cap * (2.0 * tl.sigmoid(2.0 * s_t / logit_cap) - 1.0)
            ok = n_ok[:, None] & row_ok[None, :]
            if WINDOW > 0:
                ok &= (n_prefix + qi[None, :] - n[:, None]) <= WINDOW
            s_t = tl.where(ok, s_t, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s_t, 0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p_t = tl.exp(s_t - m_safe[None, :])
            alpha = tl.exp(m_i - m_safe)
            acc_t = acc_t * alpha[None, :] + tl.dot(tl.trans(v), p_t.to(v.dtype))
            l_i = l_i * alpha + tl.sum(p_t, 0)
            m_i = m_new
        acc = tl.trans(acc_t)
    else:
        for start in range(lo, hi, BLOCK_N):
            n = start + offs_n
            n_ok = n < hi
            if not PREFETCH:
                loc = tl.load(kv_indices + kv_start + n, mask=n_ok, other=0).to(tl.int64)
            if PREFETCH:  # V requested before the scores need the SMs, so its round trip overlaps them
                v = tl.load(V_buf + loc[:, None] * stride_vbs + kvh * stride_vbh + offs_dv[None, :],
                            mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
            if K_ROWS:  # each key's row as stored (contiguous in D), transposed on chip
                k = tl.trans(tl.load(K_buf + loc[:, None] * stride_kbs + kvh * stride_kbh + offs_d[None, :],
                                     mask=n_ok[:, None] & d_ok[None, :], other=0.0))
            else:
                k = tl.load(K_buf + loc[None, :] * stride_kbs + kvh * stride_kbh + offs_d[:, None],
                            mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            qk = tl.dot(q, k) * sm_scale
            if HAS_CAP:
                qk = logit_cap * (2.0 * tl.sigmoid(2.0 * qk / logit_cap) - 1.0)  # cap * tanh(qk / cap)
            ok = row_ok[:, None] & n_ok[None, :]
            if WINDOW > 0:  # prefix key n sits n_prefix + qi - n positions before the query
                ok &= (n_prefix + qi[:, None] - n[None, :]) <= WINDOW
            qk = tl.where(ok, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a fully masked row stays empty, not NaN
            p = tl.exp(qk - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            if not PREFETCH:
                v = tl.load(V_buf + loc[:, None] * stride_vbs + kvh * stride_vbh + offs_dv[None, :],
                            mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            l_i = l_i * alpha + tl.sum(p, 1)
            m_i = m_new
            if PREFETCH:  # the next tile's slots, one round trip ahead of its K/V gathers
                nxt = n + BLOCK_N
                loc = tl.load(kv_indices + kv_start + nxt, mask=nxt < hi, other=0).to(tl.int64)

    if split == NUM_SPLITS - 1:  # the block's own keys, passed in rather than read back from the cache
        for start_j in range(0, n_q, BLOCK_N):
            j = start_j + offs_n
            j_ok = j < n_q
            k = tl.load(K_ext + (q_start + j)[None, :] * stride_kt + kvh * stride_kh + offs_d[:, None],
                        mask=j_ok[None, :] & d_ok[:, None], other=0.0)
            qk = tl.dot(q, k) * sm_scale
            if HAS_CAP:
                qk = logit_cap * (2.0 * tl.sigmoid(2.0 * qk / logit_cap) - 1.0)
            ok = row_ok[:, None] & j_ok[None, :]
            if CAUSAL:
                ok &= j[None, :] <= qi[:, None]
            if WINDOW > 0:
                ok &= (qi[:, None] - j[None, :]) <= WINDOW
            qk = tl.where(ok, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(qk - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            v = tl.load(V_ext + (q_start + j)[:, None] * stride_vt + kvh * stride_vh + offs_dv[None, :],
                        mask=j_ok[:, None] & dv_ok[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            l_i = l_i * alpha + tl.sum(p, 1)
            m_i = m_new

    t = q_start + qi
    if NUM_SPLITS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + t[:, None] * stride_ot + head[:, None] * stride_oh + offs_dv[None, :],
                 out.to(O.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    else:
        # partials laid out [token, head, split, ...], contiguous
        slot = (t.to(tl.int64) * (tl.num_programs(1) * HG) + head) * NUM_SPLITS + split
        tl.store(Part_acc + slot[:, None] * BLOCK_DV + offs_dv[None, :], acc, mask=row_ok[:, None] & dv_ok[None, :])
        tl.store(Part_ml + slot * 2, m_i, mask=row_ok)
        tl.store(Part_ml + slot * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _merge_kernel(
    Part_acc, Part_ml, O, stride_ot, stride_oh,
    NUM_SPLITS: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    row = t.to(tl.int64) * tl.num_programs(1) + h
    s = tl.arange(0, NUM_SPLITS)
    m = tl.load(Part_ml + (row * NUM_SPLITS + s) * 2)
    l = tl.load(Part_ml + (row * NUM_SPLITS + s) * 2 + 1)
    m_max = tl.max(m, 0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_max))
    offs_dv = tl.arange(0, BLOCK_DV)
    acc = tl.load(Part_acc + (row * NUM_SPLITS + s)[:, None] * BLOCK_DV + offs_dv[None, :])
    out = tl.sum(acc * w[:, None], 0) / tl.sum(l * w, 0)
    tl.store(O + t * stride_ot + h * stride_oh + offs_dv, out.to(O.dtype.element_ty), mask=offs_dv < DV)


def plan(bs: int, num_q_heads: int, num_kv_heads: int, width: int, dv: int) -> tuple[int, int]:
    """(query heads per program, prefix splits).  Host-side integers only, so a CUDA graph
    captured for one batch size replays the same launch."""
    group = num_q_heads // num_kv_heads
    e_pad = max(16, triton.next_power_of_2(width))
    hg = 1
    while hg * 2 <= group and group % (hg * 2) == 0 and e_pad * hg * 2 * triton.next_power_of_2(dv) <= _MAX_TILE:
        hg *= 2
    programs = bs * (num_q_heads // hg)
    splits = 1
    while splits * 2 <= _MAX_SPLITS and programs * splits * 2 <= _TARGET_PROGRAMS:
        splits *= 2
    return hg, splits


class KernelConfig(NamedTuple):
    """One launch of the split kernel.  ``choose_config`` gives the default; benchmarks sweep
    others (scripts/bench_block_attention.py --sweep), and every one computes the same attention."""

    heads_per_program: int  # query heads of one KV head that share a program (a divisor of the group)
    splits: int  # prefix slices, merged by log-sum-exp (a power of two)
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int
    k_rows: bool = False  # load K tiles row by row as stored and transpose on chip
    # load the next tile's slot indices one tile ahead and V before the scores: a tile's gathers
    # then wait on one memory round trip instead of three in a row
    prefetch: bool = False
    # compute the prefix's scores keys-by-queries (see the kernel): MMAs of BLOCK_N rows
    keys_as_rows: bool = False


LAUNCHES_ENV = "SGLANG_DFLASH_ATTN_LAUNCHES"


@functools.lru_cache(maxsize=1)
def _measured_launches(path: Optional[str]) -> dict:
    """``SGLANG_DFLASH_ATTN_LAUNCHES=FILE``: launches measured best for given shapes, keyed
    ``"q_heads,kv_heads,head_dim,bs"`` (written by scripts/bench_block_attention.py --sweep)."""
    if not path:
        return {}
    with open(path) as f:
        table = {k: KernelConfig(**v) for k, v in json.load(f).items()}
    for key, cfg in table.items():
        q_heads, kv_heads = map(int, key.split(",")[:2])
        _check(cfg, q_heads // kv_heads)
    return table


def launch_key(bs: int, num_q_heads: int, num_kv_heads: int, d: int) -> str:
    return f"{num_q_heads},{num_kv_heads},{d},{bs}"


def choose_config(bs: int, num_q_heads: int, num_kv_heads: int, width: int, d: int, dv: int) -> KernelConfig:
    measured = _measured_launches(os.environ.get(LAUNCHES_ENV))
    key = launch_key(bs, num_q_heads, num_kv_heads, d)
    if key in measured:
        return measured[key]
    hg, splits = plan(bs, num_q_heads, num_kv_heads, width, dv)
    block_dv = triton.next_power_of_2(dv)
    e_pad = max(16, triton.next_power_of_2(width))
    block_n = 64 if max(triton.next_power_of_2(d), block_dv) <= 128 else 32
    return KernelConfig(hg, splits, block_n, 8 if e_pad * hg * block_dv >= 8192 else 4, 2)


def _check(cfg: KernelConfig, group: int) -> None:
    pow2 = lambda x: x >= 1 and x & (x - 1) == 0  # noqa: E731
    if not (group % cfg.heads_per_program == 0 and pow2(cfg.heads_per_program) and pow2(cfg.splits)
            and pow2(cfg.block_n) and cfg.block_n >= 16
            and not (cfg.keys_as_rows and (cfg.k_rows or cfg.prefetch))):  # those shape the other loop
        raise ValueError(f"verify_attention: invalid {cfg} for {group} query heads per KV head")


def verify_attention(
    q: torch.Tensor, k_ext: torch.Tensor, v_ext: torch.Tensor, o: torch.Tensor,
    k_buffer: torch.Tensor, v_buffer: torch.Tensor, qo_indptr: torch.Tensor, kv_indptr: torch.Tensor,
    kv_indices: torch.Tensor, causal: bool, max_extend_len: int, sm_scale: float,
    logit_cap: float = 0.0, sliding_window_size: int = -1, config: Optional[KernelConfig] = None,
) -> None:
    """Writes attention of every extend query into ``o`` [T, Hq, Dv].  ``q`` [T, Hq, D],
    ``k_ext``/``v_ext`` [T, Hkv, D/Dv] (the block's own keys and values), ``k_buffer``/``v_buffer``
    [slots, Hkv, D/Dv] with the prefix at ``kv_indices[kv_indptr[b]:kv_indptr[b+1]]``.
    ``sliding_window_size`` W > 0: a query sees keys at most W positions back.  ``config``:
    the launch (default ``choose_config``)."""
    bs = qo_indptr.shape[0] - 1
    _, num_q_heads, d = q.shape
    num_kv_heads, dv = k_ext.shape[1], v_ext.shape[2]
    if config is not None:  # the default and a measured table's launches are checked where they are made
        _check(config, num_q_heads // num_kv_heads)
    cfg = config or choose_config(bs, num_q_heads, num_kv_heads, max_extend_len, d, dv)
    hg, splits = cfg.heads_per_program, cfg.splits
    block_d, block_dv = triton.next_power_of_2(d), triton.next_power_of_2(dv)
    e_pad = max(16, triton.next_power_of_2(max_extend_len))
    if splits > 1:
        part_acc = torch.empty((q.shape[0], num_q_heads, splits, block_dv), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((q.shape[0], num_q_heads, splits, 2), dtype=torch.float32, device=q.device)
    else:
        part_acc = part_ml = o  # unused
    grid = (bs, num_q_heads // hg, splits)
    _split_kernel[grid](
        q, k_ext, v_ext, k_buffer, v_buffer, qo_indptr, kv_indptr, kv_indices, o, part_acc, part_ml,
        sm_scale, logit_cap,
        q.stride(0), q.stride(1), k_ext.stride(0), k_ext.stride(1), v_ext.stride(0), v_ext.stride(1),
        k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1), o.stride(0), o.stride(1),
        GROUP=num_q_heads // num_kv_heads, HG=hg, E_PAD=e_pad, NUM_SPLITS=splits, D=d, DV=dv,
        BLOCK_D=block_d, BLOCK_DV=block_dv, BLOCK_N=cfg.block_n, CAUSAL=causal,
        WINDOW=max(sliding_window_size, 0), HAS_CAP=logit_cap > 0, K_ROWS=cfg.k_rows, PREFETCH=cfg.prefetch,
        KEYS_AS_ROWS=cfg.keys_as_rows,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if splits > 1:
        _merge_kernel[(q.shape[0], num_q_heads)](
            part_acc, part_ml, o, o.stride(0), o.stride(1), NUM_SPLITS=splits, DV=dv, BLOCK_DV=block_dv,
        )
