"""Grammar-constrained DFLASH steps (JSON schema, regex, EBNF, structural tags).

Verify: position j of a block predicts the token after [committed tokens, d_1 .. d_j], so its
logits are masked with the grammar state reached after exactly those tokens; then the greedy
acceptance (argmax of the masked logits) and the bonus token are what plain constrained
decoding picks.  A draft the grammar forbids can never equal a masked argmax: it is a rejection
there and no later position is read, so the walk stops at it.

Draft: the same walk, picking each draft as the argmax of the draft logits under the mask of the
state after the drafts before it, so forced tokens (JSON punctuation, keys, enum values) are
drafted right.  Drafts are only proposals: this raises acceptance and never changes the output.

Walks only visit states: every token accepted into a request's matcher here is rolled back.
SGLang's spec-v2 result processing advances the matcher over the committed tokens
(``advance_grammar_fsm``), exactly once.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from sglang.srt.constrained.base_grammar_backend import BaseGrammarObject, GrammarMask

from sglang_dflash.drafting import DraftHead, head_logits

# pick(j, live) -> the token at block slot j for each live request (mask rows of slot j - 1 filled)
Pick = Callable[[int, List[int]], List[int]]


def _allowed(mask: torch.Tensor, row: int, token: int, vocab_size: int) -> bool:
    """Whether ``token`` is allowed by a filled mask row, in either mask format SGLang's
    backends use: a packed int32 bitmask (bit set = allowed; xgrammar, llguidance) or a bool
    mask (True = forbidden; outlines)."""
    if not 0 <= token < vocab_size:
        return False
    if mask.dtype == torch.bool:
        return not bool(mask[row, token])
    return (int(mask[row, token >> 5]) >> (token & 31)) & 1 == 1


def constrained(grammar: Optional[BaseGrammarObject]) -> bool:
    """Plain decoding masks a request's row only while its grammar is live."""
    return grammar is not None and not grammar.finished and not grammar.is_terminated()


def walk(grammars: Sequence[Tuple[int, BaseGrammarObject]], mask: torch.Tensor, width: int, vocab_size: int,
         pick: Pick) -> None:
    """Fills mask rows ``i * width + j`` with request i's grammar state after block slots 1..j
    (slot 0 is already accepted by the grammar), slot by slot across the batch, while the
    picked tokens are allowed and the grammar is not terminated; other rows keep their
    unconstrained value.  Every grammar is left in the state it came in."""
    by_row = dict(grammars)
    walked = {i: 0 for i in by_row}
    last_token = {i: g.current_token for i, g in by_row.items()}
    for i, g in by_row.items():
        g.fill_vocab_mask(mask, i * width)
    live = list(by_row)
    try:
        for j in range(1, width):
            if not live:
                break
            still = []
            for i, token in zip(live, pick(j, live)):
                g = by_row[i]
                if not _allowed(mask, i * width + j - 1, token, vocab_size):
                    continue
                g.accept_token(token)
                walked[i] += 1
                if g.is_terminated():
                    continue  # the request ends at this token: later rows are never emitted
                g.fill_vocab_mask(mask, i * width + j)
                still.append(i)
            live = still
    finally:
        for i, g in by_row.items():
            if walked[i]:
                g.rollback(walked[i])
            g.current_token = last_token[i]


class BlockGrammar:
    """The live grammars of one decode step's batch and their masks."""

    def __init__(self, grammars: List[Tuple[int, BaseGrammarObject]], bs: int, width: int, vocab_size: int) -> None:
        self.grammars, self.bs, self.width, self.vocab_size = grammars, bs, width, vocab_size
        self.handle = grammars[0][1]
        # The constrained drafting's mask and picks (request, slot - 1, token): when the block
        # still holds those picks, the verify walk would retrace them and fill the same rows.
        self._drafted: Optional[Tuple[torch.Tensor, List[Tuple[int, int, int]]]] = None

    @classmethod
    def start(cls, batch, width: int) -> Optional["BlockGrammar"]:
        """None unless some request of the batch is constrained."""
        live = [(i, req.grammar) for i, req in enumerate(batch.reqs) if constrained(req.grammar)]
        if not live:
            return None
        return cls(live, len(batch.reqs), width, batch.sampling_info.vocab_size)

    def _new_mask(self) -> torch.Tensor:
        return self.handle.allocate_vocab_mask(vocab_size=self.vocab_size, batch_size=self.bs * self.width,
                                               device="cpu")

    def _apply(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        GrammarMask(self.handle, self.handle.move_vocab_mask(mask, logits.device)).apply(logits)

    def draft(self, hidden: torch.Tensor, head: DraftHead, drafts: torch.Tensor) -> torch.Tensor:
        """Redrafts the constrained requests' tokens [bs, B-1] under their grammars from the draft
        hidden states [bs, B, H]; one small host sync per block slot."""
        mask = self._new_mask()
        chosen: List[Tuple[int, int, int]] = []

        def pick(j: int, live: List[int]) -> List[int]:
            rows = torch.tensor(live, device=hidden.device)
            logits = head_logits(hidden[rows, j], head, self.vocab_size).float()
            self._apply(logits, mask[[i * self.width + j - 1 for i in live]])
            tokens = logits.argmax(dim=-1).tolist()
            chosen.extend((i, j - 1, t) for i, t in zip(live, tokens))
            return tokens

        walk(self.grammars, mask, self.width, self.vocab_size, pick)
        self._drafted = (mask, chosen)
        if chosen:
            rows, cols, vals = (torch.tensor(x, device=drafts.device) for x in zip(*chosen))
            drafts = drafts.index_put((rows, cols), vals.to(drafts.dtype))
        return drafts

    def verify_mask(self, block_tokens: torch.Tensor) -> torch.Tensor:
        """The verify mask (host, one row per block position) for the final block [bs, B] on the host."""
        tokens = block_tokens.tolist()
        if self._drafted is not None and all(tokens[i][j + 1] == t for i, j, t in self._drafted[1]):
            return self._drafted[0]
        mask = self._new_mask()
        walk(self.grammars, mask, self.width, self.vocab_size, lambda j, live: [tokens[i][j] for i in live])
        return mask

    def constrain_verify(self, pending: "PendingBlock", logits: torch.Tensor) -> None:
        """Masks the verify logits [bs * B, V] in place (the host walk overlaps the verify forward)."""
        self._apply(logits, self.verify_mask(pending.host()))


class PendingBlock:
    """The block's token ids on their way to the host, copied while the verify forward runs."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self._event = None
        if tokens.device.type == "cpu":
            self._host = tokens
        else:
            self._host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            self._host.copy_(tokens, non_blocking=True)
            self._event = torch.get_device_module(tokens.device).Event()
            self._event.record()

    def host(self) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()
        return self._host
