"""Our draft model (built from SGLang layers, loaded from the tiny checkpoint) against a plain
PyTorch reference of the DFlash math: context K/V from target features ("KV injection")."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from helpers import free_port, tiny_models


@pytest.fixture(scope="module")
def draft_model():
    from sglang.srt.distributed import init_distributed_environment, initialize_model_parallel
    from sglang.srt.runtime_context import publish
    from sglang.srt.server_args import ServerArgs
    from transformers import PretrainedConfig

    from sglang_dflash.draft_model import DFlashDraftModel

    # SGLang layers read the process-wide server config (as in a scheduler process).
    publish(ServerArgs(model_path=os.path.join(tiny_models(), "gemma4"), device="cpu",
                       attention_backend="torch_native", dtype="float32"), role="test")
    init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                 distributed_init_method=f"tcp://127.0.0.1:{free_port()}")
    initialize_model_parallel(1)
    path = os.path.join(tiny_models(), "gemma4-dflash")
    cfg = PretrainedConfig.from_dict(json.load(open(os.path.join(path, "config.json"))))
    model = DFlashDraftModel(cfg).float()
    weights = load_file(os.path.join(path, "model.safetensors"))
    model.load_weights(weights.items())
    return model, weights, cfg


def rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos.double()[:, None] * inv[None]
    cos, sin = ang.cos().float()[:, None], ang.sin().float()[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def test_context_kv_matches_reference(draft_model):
    model, w, cfg = draft_model
    h, k_ids = cfg.hidden_size, cfg.dflash_config["target_layer_ids"]
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(7, len(k_ids) * h, generator=g)
    pos = torch.tensor([0, 1, 5, 63, 64, 100, 2000])
    ctx = rms(feats @ w["fc.weight"].t(), w["hidden_norm.weight"])
    theta = cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters") else cfg.rope_theta
    got = model.context_kv(pos, feats)
    for i, (k, v) in enumerate(got):
        p = f"layers.{i}.self_attn."
        hd = cfg.head_dim
        ref_k = (ctx @ w[p + "k_proj.weight"].t()).view(7, -1, hd)
        ref_k = rope(rms(ref_k, w[p + "k_norm.weight"]), pos, theta)
        ref_v = (ctx @ w[p + "v_proj.weight"].t()).view(7, -1, hd)
        torch.testing.assert_close(k, ref_k, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(v, ref_v, rtol=1e-5, atol=1e-5)


def test_layer_attention_kinds(draft_model):
    from sglang.srt.layers.radix_attention import AttentionType

    model, _, cfg = draft_model
    for layer, kind in zip(model.layers, cfg.layer_types):
        attn = layer.self_attn.attn
        if kind == "sliding_attention":  # causal within the window (SGLang counts the window without the query)
            assert attn.attn_type == AttentionType.DECODER and attn.sliding_window_size == cfg.sliding_window - 1
        else:  # bidirectional over context + block
            assert attn.attn_type == AttentionType.ENCODER_ONLY and attn.sliding_window_size == -1
    assert model.get_attention_sliding_window_size() == cfg.sliding_window - 1
