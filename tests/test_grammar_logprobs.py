"""The grammar walk (verify masks, constrained drafting) against a step-by-step reference with
SGLang's real xgrammar backend on the tiny Qwen3 tokenizer, and the emitted-token logprobs
against a plain log-softmax reference."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from helpers import tiny_models
from sglang.srt.constrained.xgrammar_backend import XGrammarGrammarBackend
from sglang_dflash.drafting import DraftHead
from sglang_dflash.grammar import BlockGrammar, PendingBlock, walk
from sglang_dflash.logprobs import emitted_logprobs

VOCAB = 2048
WIDTH = 8
SCHEMA = json.dumps({"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                                                      "ok": {"type": "boolean"}},
                     "required": ["name", "ok"], "additionalProperties": False})


@pytest.fixture(scope="module")
def env():
    tok = AutoTokenizer.from_pretrained(os.path.join(tiny_models(checks=False), "qwen3"))
    backend = XGrammarGrammarBackend(tok, vocab_size=VOCAB, model_eos_token_ids=[tok.eos_token_id],
                                     any_whitespace=False)
    return tok, backend


def fresh(backend, committed):
    g = backend.dispatch_json(SCHEMA)
    for t in committed:
        g.accept_token(t)
    return g


def reference_row(backend, committed, drafts) -> torch.Tensor:
    g = fresh(backend, committed + drafts)
    mask = g.allocate_vocab_mask(VOCAB, 1, "cpu")
    g.fill_vocab_mask(mask, 0)
    return mask[0]


def test_verify_mask_follows_the_drafts_and_stops_at_a_forbidden_one(env):
    tok, backend = env
    ids = tok.encode('{"name": "abc", "ok": true}', add_special_tokens=False)
    committed, rest = ids[:2], ids[2:]
    forbidden = tok.encode("}", add_special_tokens=False)[0]
    # Block: slot 0 is the last committed token; 3 allowed drafts, one forbidden, then anything.
    block = [committed[-1]] + rest[:3] + [forbidden] + rest[3:6]
    g = fresh(backend, committed)
    before = list(g.accepted_tokens)
    grammar = BlockGrammar([(1, g)], bs=2, width=WIDTH, vocab_size=VOCAB)
    other = torch.tensor([[5] * WIDTH])  # an unconstrained request in row 0
    mask = grammar.verify_mask(torch.cat([other, torch.tensor([block])]))

    unconstrained = g.allocate_vocab_mask(VOCAB, 1, "cpu")[0]
    assert torch.equal(mask[:WIDTH], unconstrained.expand(WIDTH, -1))
    for j in range(4):  # rows 0..3: the state after the allowed drafts d_1..d_j
        assert torch.equal(mask[WIDTH + j], reference_row(backend, committed, block[1:j + 1])), j
    for j in range(4, WIDTH):  # past the forbidden draft: never read
        assert torch.equal(mask[WIDTH + j], unconstrained), j
    assert g.accepted_tokens == before  # rolled back
    assert torch.equal(reference_row(backend, committed, []), reference_row(backend, g.accepted_tokens, []))


def test_walk_stops_at_termination_and_rolls_it_back(env):
    tok, backend = env
    g = backend.dispatch_regex("ab")
    a, b = tok.encode("a", add_special_tokens=False)[0], tok.encode("b", add_special_tokens=False)[0]
    g.accept_token(a)
    mask = g.allocate_vocab_mask(VOCAB, WIDTH, "cpu")
    block = [a, b, tok.eos_token_id, 7, 8, 9, 10, 11]
    walk([(0, g)], mask, WIDTH, VOCAB, lambda j, live: [block[j] for _ in live])
    assert not g.is_terminated() and g.accepted_tokens == [a]
    eos_only = torch.zeros(VOCAB, dtype=torch.bool)
    eos_only[tok.eos_token_id] = True
    bits = lambda row: torch.tensor([(int(mask[row, t >> 5]) >> (t & 31)) & 1 == 1 for t in range(VOCAB)])
    assert torch.equal(bits(1), eos_only)  # after "ab" only the end is allowed
    assert bits(2).all()  # after the end: unconstrained, the request stops there


def test_constrained_drafting_picks_the_masked_argmax(env):
    tok, backend = env
    committed = tok.encode('{"', add_special_tokens=False)
    g = fresh(backend, committed)
    torch.manual_seed(0)
    hidden, lm_head = torch.randn(2, WIDTH, 16), torch.randn(VOCAB + 64, 16)  # padded LM head rows
    drafts = torch.randint(0, VOCAB, (2, WIDTH - 1))
    batch = SimpleNamespace(reqs=[SimpleNamespace(grammar=None), SimpleNamespace(grammar=g)],
                            sampling_info=SimpleNamespace(vocab_size=VOCAB))
    grammar = BlockGrammar.start(batch, WIDTH)
    out = grammar.draft(hidden, DraftHead(lm_head, 0, VOCAB, sharded=False), drafts)
    assert torch.equal(out[0], drafts[0])
    picked = []
    for j in range(1, WIDTH):  # reference: one slot at a time from a fresh matcher
        ref = fresh(backend, committed + picked)
        if ref.is_terminated():
            break
        logits = (hidden[1, j] @ lm_head.t())[:VOCAB].clone().unsqueeze(0)
        m = ref.allocate_vocab_mask(VOCAB, 1, "cpu")
        ref.fill_vocab_mask(m, 0)
        ref.apply_vocab_mask(logits, m)
        picked.append(int(logits.argmax()))
    assert out[1, :len(picked)].tolist() == picked
    assert g.accepted_tokens == committed
    # The verify walk over the constrained drafts keeps every one of them.
    tokens = torch.cat([torch.tensor([[committed[-1]]] * 2), out], dim=1)
    mask = grammar.verify_mask(PendingBlock(tokens).host())
    assert all(torch.equal(mask[WIDTH + j], reference_row(backend, committed, picked[:j])) for j in range(len(picked)))
    # A block whose drafts were replaced afterwards (the benchmark's controlled acceptance) is walked afresh.
    tokens[1, 3] = tok.encode("}", add_special_tokens=False)[0]
    mask = grammar.verify_mask(tokens)
    assert all(torch.equal(mask[WIDTH + j], reference_row(backend, committed, picked[:j])) for j in range(3))
    assert torch.equal(mask[WIDTH + 3], g.allocate_vocab_mask(VOCAB, 1, "cpu")[0])


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_emitted_logprobs_match_a_log_softmax_reference(temperature):
    torch.manual_seed(1)
    bs, width, vocab = 2, 4, 50
    logits = torch.randn(bs * width, vocab) * 3
    logits[1, 7] = float("-inf")  # a grammar-masked token
    out_tokens = torch.randint(0, vocab, (bs, width))
    out_tokens[0, 1] = 7
    temps = None if temperature is None else torch.full((bs, 1), temperature)
    res = emitted_logprobs(logits.clone(), out_tokens, temps, [5, 0], [None, [3, 7]])
    ref = torch.log_softmax(logits / (temperature or 1.0), dim=-1).clamp(min=torch.finfo(torch.float32).min)
    flat = out_tokens.reshape(-1)
    assert res.token_logprobs.shape == (bs, width)
    assert torch.allclose(res.token_logprobs.reshape(-1), ref[torch.arange(bs * width), flat])
    for r in range(bs * width):
        if r < width:  # request 0 asked for the top 5
            vals, idx = ref[r].topk(5)
            assert torch.allclose(torch.as_tensor(res.top_logprobs_val[r]), vals)
            assert list(res.top_logprobs_idx[r]) == idx.tolist()
            assert res.token_ids_logprobs_val[r] == []
        else:  # request 1 asked for tokens 3 and 7
            assert len(res.top_logprobs_val[r]) == 0
            assert torch.allclose(torch.as_tensor(res.token_ids_logprobs_val[r]), ref[r, [3, 7]])
