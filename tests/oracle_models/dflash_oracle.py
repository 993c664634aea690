"""A test-only draft that is mostly right about the "pi" target (scripts/make_tiny_models.py).

The pi target's greedy next token is (almost always) a fixed permutation pi of the current token.
This draft walks pi from the block's first token, producing at slot i the target's own final
hidden state for the token it expects at slot i-1, so the worker's greedy head (the target LM
head) yields pi^i(first token).  At positions picked by a fixed hash it deliberately drafts the
wrong token, so acceptance is long but partial (about 7 tokens per step with block 16).  Its
layers, context KV and attention still run as usual: only the hidden states it returns differ.
"""

from __future__ import annotations

import torch

from sglang.srt.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_gather
from sglang.srt.layers.logits_processor import LogitsProcessorOutput

from sglang_dflash.draft_model import DFlashDraftModel

WRONG_EVERY = 8


def wrong_at(positions: torch.Tensor) -> torch.Tensor:
    return ((positions * 2654435761) >> 7) % WRONG_EVERY == 0


class DFlashOracleDraftModel(DFlashDraftModel):
    def bind_target(self, target_model) -> None:
        super().bind_target(target_model)
        self._target = target_model

    def forward(self, input_ids, positions, forward_batch, input_embeds=None, **kw):
        real = super().forward(input_ids, positions, forward_batch, input_embeds, **kw)
        width = int(forward_batch.spec_info.draft_token_num)
        ids, pos = input_ids.view(-1, width), positions.view(-1, width)
        embed, norm = self._target.get_input_embeddings(), self._target.model.norm
        lm_head = self._target.lm_head.weight  # this rank's vocabulary slice under tensor parallelism
        vocab = lm_head.shape[0] * get_tensor_model_parallel_world_size()  # the tiny vocab has no padding
        hidden = real.hidden_states.view(ids.shape[0], width, -1).clone()
        expected = ids[:, 0]
        for i in range(1, width):
            fed = torch.where(wrong_at(pos[:, i]), (expected + 1) % vocab, expected)
            h = norm(embed(fed))
            hidden[:, i] = h.to(hidden.dtype)
            logits = h.to(lm_head.dtype) @ lm_head.t()
            if get_tensor_model_parallel_world_size() > 1:
                logits = tensor_model_parallel_all_gather(logits, dim=-1)
            expected = logits.argmax(dim=-1)
        return LogitsProcessorOutput(next_token_logits=None, hidden_states=hidden.view(-1, hidden.shape[-1]))


EntryClass = DFlashOracleDraftModel
