"""Target-feature capture -> draft context KV ("KV injection").

The draft's context K/V for a committed token comes from the target's captured layer outputs
for that token (fc -> hidden_norm -> each draft layer's k/v projection), written at the same KV
slot index the target uses for the token, so a radix-cache hit finds both caches filled.
"""

from __future__ import annotations

import torch

from sglang_dflash.draft_model import DFlashDraftModel


def write_context_kv(
    draft_model: DFlashDraftModel,
    kv_pool,
    features: torch.Tensor,
    positions: torch.Tensor,
    cache_locs: torch.Tensor,
) -> None:
    """Project ``features`` [N, K*H] of tokens at ``positions`` [N] into every draft layer's KV at ``cache_locs``."""
    if features.shape[0] == 0:
        return
    per_layer = draft_model.context_kv(positions, features)
    for layer, (k, v) in zip(draft_model.layers, per_layer):
        kv_pool.set_kv_buffer(layer.self_attn.attn, cache_locs, k, v)
