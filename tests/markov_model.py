"""A tiny target whose next-token distribution is a designed, spread-out Markov chain over a few
"active" tokens, for statistical tests of sampling: the tiny Qwen3 with its layers muted (as the
"pi" target: o_proj/down_proj x 1e-3), active-token embeddings built on orthonormal directions,
and an LM head that gives, after active token a_b, the logit ROW_LOGITS[k] to a_{perm_b[k]} and
-30 to every other token.  So the joint of a few generated tokens has a modest number of likely
outcomes (chi-square friendly) while every row keeps real uncertainty (top-2 ~ 0.55 / 0.2).

The mostly-right oracle draft (tests/oracle_models) drafts each row's most likely token, so a
draft is accepted about half the time: acceptance, rejection, residual and bonus all happen.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import torch

from helpers import ROOT, tiny_models

ACTIVE = list(range(1000, 1024))  # K = 24 > 20, so top_k 20 cuts part of every row
ROW_LOGITS = [3.0, 2.0, 1.0, 0.0] + [-1.0 - 0.1 * j for j in range(len(ACTIVE) - 4)]
INACTIVE_LOGIT = -30.0
SEED = 4321


def row_logits() -> torch.Tensor:
    """[K, K]: logits of active token k after active token b (before the network's small noise)."""
    g = torch.Generator().manual_seed(SEED)
    m = torch.empty(len(ACTIVE), len(ACTIVE))
    for b in range(len(ACTIVE)):
        m[b, torch.randperm(len(ACTIVE), generator=g)] = torch.tensor(ROW_LOGITS)
    return m


def build(out: str, base: str) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out, dirs_exist_ok=True)
    sd = {k: v.float() for k, v in load_file(os.path.join(out, "model.safetensors")).items()}
    for k in sd:
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            sd[k] *= 1e-3
    emb = sd["model.embed_tokens.weight"]
    hidden = emb.shape[1]
    g = torch.Generator().manual_seed(SEED + 1)
    basis, _ = torch.linalg.qr(torch.randn(hidden, len(ACTIVE) + 1, generator=g))
    shared, dirs = basis[:, 0], basis[:, 1:].t()  # unit vectors, mutually orthogonal
    emb = emb / emb.norm(dim=1, keepdim=True) * math.sqrt(hidden)
    # |shared + dir_b| * scale = sqrt(H): the final RMSNorm leaves these embeddings as they are
    scale = math.sqrt(hidden / 2)
    emb[ACTIVE] = (shared + dirs) * scale
    lm_head = (INACTIVE_LOGIT / scale) * shared.expand(emb.shape[0], hidden).clone()
    lm_head[ACTIVE] = row_logits().t() @ dirs / scale
    sd["model.embed_tokens.weight"], sd["lm_head.weight"] = emb, lm_head
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out, "markov.json"), "w") as f:
        json.dump({"active": ACTIVE, "row_logits": row_logits().tolist()}, f)


def markov_model(checks: bool = True) -> str:
    """Path of the Markov target (built next to the tiny models, rebuilt when this file changes)."""
    base = tiny_models(checks=checks)
    with open(__file__, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(ROOT, ".models", f"markov-{os.path.basename(base)}-{digest}")
    if not os.path.exists(os.path.join(out, ".complete")):
        build(out, os.path.join(base, "qwen3"))
        open(os.path.join(out, ".complete"), "w").close()
    return out
