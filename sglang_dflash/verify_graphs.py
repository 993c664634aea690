"""CUDA graphs of the target verify at narrower block widths (sglang_dflash/verify_width.py).

SGLang captures the target verify for one width, the block size.  A narrower verify then ran
eagerly: on an H200 at 32 requests 110 ms against 42 ms graphed (BENCHMARKS.md), which cost more
than the narrower block saved.  So each width the policy may pick gets a graph runner of its own
(SGLang's ``DecodeCudaGraphRunner``, built for that width), with its own attention backend (a
backend's graph buffers are sized and planned per width), for the batch sizes at which narrowing
can pay: those whose full block is past the verify's knee.  All runners share SGLang's graph
memory pool and input buffers, which is safe because verifies run one at a time on one stream.

``SGLANG_DFLASH_VERIFY_GRAPH_WIDTHS`` lists the widths (default 6,8,10,12; empty: none).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator, Optional

import torch

logger = logging.getLogger("sglang_dflash")

GRAPH_WIDTHS_ENV = "SGLANG_DFLASH_VERIFY_GRAPH_WIDTHS"
DEFAULT_GRAPH_WIDTHS = "6,8,10,12"


def graph_widths(block_size: int, spec: Optional[str] = None) -> list[int]:
    """The narrower widths to capture, from ``SGLANG_DFLASH_VERIFY_GRAPH_WIDTHS`` (or ``spec``)."""
    spec = os.environ.get(GRAPH_WIDTHS_ENV, DEFAULT_GRAPH_WIDTHS) if spec is None else spec
    try:
        widths = sorted({int(w) for w in spec.replace(" ", "").split(",") if w})
    except ValueError:
        raise ValueError(f"{GRAPH_WIDTHS_ENV}={spec!r}: expected comma-separated widths") from None
    bad = [w for w in widths if not 2 <= w < block_size]
    if bad:
        raise ValueError(f"{GRAPH_WIDTHS_ENV}={spec!r}: widths must lie in [2, {block_size - 1}], got {bad}")
    return widths


def narrowing_batch_sizes(capture_bs: list[int], block_size: int, knee: int) -> list[int]:
    """The captured batch sizes a narrower verify can help: a full block past the knee."""
    return [bs for bs in capture_bs if bs * block_size > knee]


class VerifyGraphs:
    """The target's verify graph runners by width: SGLang's own for the full block, ours for the
    narrower ones (``capture``)."""

    def __init__(self, model_runner, block_size: int, narrow: dict) -> None:
        self.model_runner = model_runner
        self.block_size = block_size
        self.narrow = narrow  # width -> DecodeCudaGraphRunner

    @classmethod
    def capture(cls, model_runner, block_size: int, knee: int) -> "VerifyGraphs":
        """Captures the narrower widths' graphs (none where the target has no verify graphs)."""
        full = model_runner.decode_cuda_graph_runner
        narrow: dict = {}
        widths = graph_widths(block_size)
        if full is None or not widths:
            return cls(model_runner, block_size, narrow)
        sizes = narrowing_batch_sizes(list(full.capture_bs), block_size, knee)
        if not sizes:
            return cls(model_runner, block_size, narrow)
        phase = model_runner.server_args.cuda_graph_config.decode
        saved = phase.bs
        phase.bs = sizes  # SGLang's runner captures the sizes this list names
        t0 = time.perf_counter()
        try:
            for width in widths:
                narrow[width] = model_runner._decode_cuda_graph_runner_cls()(
                    model_runner, attn_backend=_sibling_backend(model_runner, full.attn_backend),
                    speculative_num_draft_tokens=width,
                )
        finally:
            phase.bs = saved
        logger.info("sglang-dflash verify graphs: widths %s captured for bs %s in %.1f s (full width %d: SGLang's)",
                    widths, sizes, time.perf_counter() - t0, block_size)
        return cls(model_runner, block_size, narrow)

    def widths_for(self, bs: int) -> Optional[list[int]]:
        """Widths a batch of ``bs`` verifies graphed (None: no graphs at all, any width is eager)."""
        if self.model_runner.decode_cuda_graph_runner is None:
            return None
        return [w for w, r in self.narrow.items() if min(r.capture_bs) <= bs <= r.max_bs] + [self.block_size]

    def runner(self, width: int):
        return self.narrow.get(width, self.model_runner.decode_cuda_graph_runner)

    @contextlib.contextmanager
    def replaying(self, width: int) -> Iterator[None]:
        """The target's forward replays the runner of ``width`` (SGLang's forward asks the model
        runner's one decode runner whether it can run the batch, then runs it)."""
        runner = self.narrow.get(width)
        if runner is None:
            yield
            return
        mr = self.model_runner
        full, mr.decode_cuda_graph_runner = mr.decode_cuda_graph_runner, runner
        try:
            yield
        finally:
            mr.decode_cuda_graph_runner = full


def _sibling_backend(model_runner, main):
    """A new attention backend of the target's kind whose graph state takes the main backend's
    KV-index buffers (SGLang sizes them tokens x context length: gigabytes per backend at long
    contexts; verifies run one at a time, so they can share them)."""
    backend = model_runner._get_attention_backend()
    for attr in ("prefill_attention_backend_str", "decode_attention_backend_str"):
        if hasattr(main, attr):
            setattr(backend, attr, getattr(main, attr))
    own = backend.init_cuda_graph_state
    shared = getattr(main, "cuda_graph_kv_indices", None)
    if shared is None:
        return backend

    def init_cuda_graph_state(max_bs: int, max_num_tokens: int, *args, **kwargs):
        kwargs.setdefault("kv_indices_buf", shared)
        own(max_bs, max_num_tokens, *args, **kwargs)
        window = getattr(main, "cuda_graph_window_kv_indices", None)
        if window is not None and hasattr(backend, "cuda_graph_window_kv_indices"):
            backend.cuda_graph_window_kv_indices = window  # SGLang made one the shared buffer's size
            torch.cuda.empty_cache()

    backend.init_cuda_graph_state = init_cuda_graph_state
    return backend
