"""Tokens a forward committed on the device that the host has not taken in yet.

Under SGLang's overlap scheduler the result of forward n is processed (appended to each request's
``output_ids``) only after forward n+1 has been launched, except where SGLang syncs first (e.g.
two prefills in a row).  Penalties must count every emitted token, so a sampled step adds the
previous forward's committed tokens to the host's counts exactly when the host has not seen them:
a request whose ``output_ids`` did not grow since that forward was launched.  Every decode
forward commits at least one token per request, which is what makes "did not grow" exact.  A
chunked prefill's intermediate chunk emits a token SGLang drops, but such a request's next
forward is its next chunk, which replaces the record before any sampled step reads it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


class PendingOutputs:
    def __init__(self) -> None:
        self.rows: dict = {}  # rid -> (row in tokens, len(output_ids) when the forward was launched)
        self.tokens: Optional[torch.Tensor] = None  # [n, W] the forward's committed tokens, row-padded
        self.lens: Optional[torch.Tensor] = None  # [n] how many of each row were committed

    def record(self, reqs: Sequence, launch_lens: Sequence[int], tokens: torch.Tensor, lens: torch.Tensor) -> None:
        """The forward just run: row i of ``tokens`` [n, W] / ``lens`` [n] belongs to ``reqs[i]``,
        whose output length was ``launch_lens[i]`` at launch."""
        self.rows = {r.rid: (i, n) for i, (r, n) in enumerate(zip(reqs, launch_lens))}
        self.tokens, self.lens = tokens, lens

    def add_counts(self, reqs: Sequence, counts: torch.Tensor, wanted: Sequence[bool]) -> None:
        """Adds to ``counts`` [bs, V] (device) the unseen committed tokens of each request with
        ``wanted[i]`` (one that counts its output for penalties)."""
        pairs = [(i, self.rows[r.rid][0]) for i, r in enumerate(reqs)
                 if wanted[i] and r.rid in self.rows and len(r.output_ids) == self.rows[r.rid][1]]
        if not pairs:
            return
        dst, src = (torch.tensor(x, dtype=torch.int64).to(counts.device, non_blocking=True) for x in zip(*pairs))
        toks, lens = self.tokens[src], self.lens[src]
        valid = torch.arange(toks.shape[1], device=toks.device).unsqueeze(0) < lens.unsqueeze(1)
        rows = dst.unsqueeze(1).expand_as(toks)
        # Uncommitted positions add 0 at any in-range token: no boolean-mask select, no host sync.
        counts.index_put_((rows, toks.clamp(0, counts.shape[1] - 1)), valid.to(counts.dtype), accumulate=True)
