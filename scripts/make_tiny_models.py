#!/usr/bin/env python3
"""Build tiny random-weight DFlash test models, offline and deterministically, in seconds on a CPU.

  qwen3            Qwen3ForCausalLM target (untied lm_head)
  qwen3-dflash     its DFlash draft (z-lab layout; block_size at the top level)
  gemma4           Gemma4ForCausalLM target (gemma4_text) shaped like gemma-4-31B-it's text
                   decoder: [sliding x5, full] x2, sliding head_dim 64 / full head_dim 128
                   (kept in SGLang's fast-RoPE set like the real 256/512), attention_k_eq_v with
                   fewer global KV heads, proportional partial RoPE, tied embedding, softcap 30
  gemma4-dflash    its draft (sliding x2 + full; block_size inside dflash_config); also the draft
                   for gemma4-mm
  gemma4-mm        the SAME text weights as google/gemma-4-31B-it ships them:
                   Gemma4ForConditionalGeneration (model_type gemma4) with a 1-layer vision tower
                   and text weights under model.language_model.*
  qwen3-pi         "predictable" Qwen3: greedy next token == pi[token] for a one-cycle permutation
                   pi of the vocabulary (pi.json); for acceptance tests
  qwen3-pi-oracle  qwen3-dflash's weights under architectures ["DFlashOracleDraftModel"]

Tokenizers are real BPE tokenizers trained here on Python's pydoc text (which differs slightly
between Python versions: tests should send token ids), saved with chat templates.  All weights
come from seeded generators, so the same inputs give the same bytes.

gemma4-mm on a machine without torchvision (our CPU env): SGLang 0.5.17 builds the HF
Gemma4Processor for every multimodal model, even with --skip-tokenizer-init, and transformers'
Gemma-4 image processor imports torchvision.  Serve it text-only: sglang.Engine(...,
enable_multimodal=False), or ServerArgs.from_cli_args() on a parsed namespace with
enable_multimodal=False (launch_server's --enable-multimodal can only turn it on).
usage: make_tiny_models.py OUT_DIR [--dtype float32|bfloat16]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB = 2048      # embedding rows; every tokenizer id is below it
BPE_VOCAB = 1984  # learned part of the tokenizers
H = 256
GLOBAL_HEAD_DIM = 128  # Gemma-4 full-attention layers (sliding ones: 64)
SEED = 1234
CHECKS = True    # HF self-checks of what was built (--skip-checks turns them off)
# ids 0..4 as in the real Gemma-4 vocab, whose DFlash draft uses mask_token_id 4
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>",
                  "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>", "<|video|>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
                 "<tool_call>", "</tool_call>"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CONTENT = ("{%- if message['content'] is string %}{%- set content = message['content'] %}{%- else %}"
           "{%- set content = namespace(s='') %}{%- for part in message['content'] %}"
           "{%- if part['type'] == 'text' %}{%- set content.s = content.s + part['text'] %}"
           "{%- else %}{%- set content.s = content.s + IMG %}{%- endif %}{%- endfor %}"
           "{%- set content = content.s %}{%- endif %}")
QWEN3_TEMPLATE = (
    "{%- for message in messages %}" + CONTENT.replace("IMG", "''") +
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
GEMMA4_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}" + CONTENT.replace("IMG", "'<|image|>'") +
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<|turn>' + role + '\\n' + content | trim + '<turn|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|turn>model\\n' }}{%- endif %}")


def corpus() -> list[str]:
    import pydoc_data.topics as t
    chat = ("Hello! How are you today? I am fine, thank you. What is the capital of France? "
            "Paris is the capital of France. The quick brown fox jumps over the lazy dog.")
    return [t.topics[k] for k in sorted(t.topics)] + [chat] * 50


def qwen_tokenizer(out: Path) -> dict[str, int]:
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(QWEN_SPECIALS)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                 pad_token="<|endoftext|>")
    hf.chat_template = QWEN3_TEMPLATE
    hf.save_pretrained(out)
    patch_json(out / "tokenizer_config.json", tokenizer_class="Qwen2Tokenizer")
    ids = {s: tok.token_to_id(s) for s in QWEN_SPECIALS}
    # z-lab's Qwen3 drafts use the first id past the tokenizer (151669) as the mask token
    ids["mask"] = tok.get_vocab_size()
    assert ids["mask"] < VOCAB
    return ids


def gemma_tokenizer(out: Path) -> dict[str, int]:
    """SentencePiece-style BPE ('▁' for spaces, <0xNN> byte fallback) via GemmaTokenizer."""
    from transformers import GemmaTokenizer
    t = Tokenizer(models.BPE(unk_token=None))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    n_fixed = len(GEMMA_SPECIALS) + 256
    t.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=BPE_VOCAB - n_fixed, min_frequency=2, show_progress=False, limit_alphabet=200))
    learned = json.loads(t.to_str())["model"]
    vocab = {s: i for i, s in enumerate(GEMMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for tok, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    assert len(vocab) < VOCAB
    # named multimodal tokens: Gemma4Processor reads tokenizer.image_token etc.
    named = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
             "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}
    hf = GemmaTokenizer(vocab=vocab, merges=merges, extra_special_tokens=named)
    hf.add_special_tokens({"additional_special_tokens": GEMMA_SPECIALS[5:]})
    hf.chat_template = GEMMA4_TEMPLATE
    hf.save_pretrained(out)
    assert len(hf) == len(vocab), (len(hf), len(vocab))
    return {s: vocab[s] for s in GEMMA_SPECIALS}


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def patch_json(path: Path, **updates) -> None:
    write_json(path, {**json.loads(path.read_text()), **updates})


def randomize(model: torch.nn.Module, seed: int, embed_std: float = 1.0) -> None:
    """Seeded weights that do not depend on transformers' init code.  Linears ~ 1/sqrt(fan_in)
    so attention and MLP outputs are as large as the token embedding: output depends on context
    (wrong KV shows).  Norms and layer scalars ~1 but not exactly (a loader skipping them shows)."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(sd):
            p = sd[name]
            if "norm" in name or "layer_scalar" in name:
                p.copy_(1 + 0.05 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                std = embed_std if "embed_tokens" in name else p.shape[-1] ** -0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif p.is_floating_point():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def save_target(model, out: Path, dtype: torch.dtype, gen_cfg: dict, **extra) -> None:
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    write_json(out / "generation_config.json", {**gen_cfg, "do_sample": False})
    cfg = json.loads((out / "config.json").read_text())
    if "text_config" in cfg:  # SGLang takes the dtype from the text config
        cfg["text_config"]["dtype"] = cfg["dtype"]
    for c in (cfg, cfg.get("text_config") or {}):
        if c.get("model_type") == "gemma4_text":
            # transformers >= 5.13 writes global_head_dim as a per-layer `per_layer_config`;
            # keep the form of the Hub checkpoints (and of SGLang 0.5.17's transformers 5.12.1)
            c.pop("per_layer_config", None)
            c["global_head_dim"] = GLOBAL_HEAD_DIM
    write_json(out / "config.json", {**cfg, **extra})


def make_qwen3(out: Path, dtype: torch.dtype) -> tuple[object, dict[str, int]]:
    from transformers import Qwen3Config, Qwen3ForCausalLM
    ids = qwen_tokenizer(out)
    eot, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=H, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                      bos_token_id=eot, eos_token_id=eos, pad_token_id=eot)
    cfg.architectures = ["Qwen3ForCausalLM"]
    m = Qwen3ForCausalLM(cfg)
    randomize(m, SEED)
    save_target(m, out, dtype, {"bos_token_id": eot, "eos_token_id": [eos, eot], "pad_token_id": eot})
    return cfg, ids


def gemma4_text_config(ids: dict[str, int]):
    from transformers import Gemma4TextConfig
    return Gemma4TextConfig(
        vocab_size=VOCAB, hidden_size=H, intermediate_size=512, num_hidden_layers=12,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        # as many global KV heads as sliding ones: transformers 5.17 (the GPU machine) reads a
        # per-layer config in which this field is lost, and SGLang then sizes K/V by num_key_value_heads
        num_global_key_value_heads=2, global_head_dim=GLOBAL_HEAD_DIM, attention_k_eq_v=True,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=4096, rms_norm_eps=1e-6,
        sliding_window=64, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 2,
        final_logit_softcapping=30.0, hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=VOCAB, num_kv_shared_layers=0, enable_moe_block=False,
        tie_word_embeddings=True, pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"],
        eos_token_id=[ids["<eos>"], ids["<turn|>"]],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0}})


def make_gemma4(out: Path, dtype: torch.dtype) -> tuple[object, dict[str, int]]:
    from transformers import Gemma4ForCausalLM
    ids = gemma_tokenizer(out)
    cfg = gemma4_text_config(ids)
    cfg.architectures = ["Gemma4ForCausalLM"]
    m = Gemma4ForCausalLM(cfg)
    randomize(m, SEED + 1, embed_std=H ** -0.5)  # Gemma multiplies embeddings by sqrt(H) itself
    save_target(m, out, dtype, {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
                                "pad_token_id": cfg.pad_token_id})
    return cfg, ids


def make_gemma4_mm(out: Path, text_dir: Path, ids: dict[str, int], dtype: torch.dtype) -> None:
    """The multimodal form of gemma4 (same text tensors), checked to decode like it."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, head_dim=32,
                  num_attention_heads=2, num_key_value_heads=2, position_embedding_size=1024)
    cfg = Gemma4Config(
        text_config=gemma4_text_config(ids).to_dict(), vision_config=vision,
        audio_config=None, boi_token_id=ids["<|image>"], eoi_token_id=ids["<image|>"],
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        boa_token_id=ids["<|audio>"], eoa_token_index=ids["<audio|>"],
        audio_token_id=ids["<|audio|>"], tie_word_embeddings=True)
    cfg.architectures = ["Gemma4ForConditionalGeneration"]
    m = Gemma4ForConditionalGeneration(cfg)
    randomize(m, SEED + 2)  # vision tower + projector
    text = {k.removeprefix("model."): v.float() for k, v in load_file(text_dir / "model.safetensors").items()}
    missing, unexpected = m.model.language_model.load_state_dict(text, strict=False)
    assert not unexpected and all("embed_scale" in k for k in missing), (missing, unexpected)
    # SGLang's Gemma4 processor reads eoa_token_id, transformers eoa_token_index
    save_target(m, out, dtype, json.loads((text_dir / "generation_config.json").read_text()),
                eoa_token_id=ids["<audio|>"])
    for f in text_dir.iterdir():
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy(f, out / f.name)
    # SGLang builds this processor for every multimodal model, also with --skip-tokenizer-init
    # (the class defaults are the real ones; 70 soft tokens per image keeps vision inputs small)
    geometry = {"patch_size": 16, "pooling_kernel_size": 3, "max_soft_tokens": 70}
    write_json(out / "processor_config.json", {
        "processor_class": "Gemma4Processor", "image_seq_length": 70, "audio_seq_length": 750,
        "audio_ms_per_token": 40,
        "image_processor": {"image_processor_type": "Gemma4ImageProcessor", **geometry},
        "video_processor": {"video_processor_type": "Gemma4VideoProcessor", **geometry},
        "feature_extractor": {"feature_extractor_type": "Gemma4AudioFeatureExtractor"}})

    if not CHECKS or dtype != torch.float32:
        # bf16 weights: the text-only and multimodal HF classes need not round identically (a
        # near-tie flipped late in a 104-token greedy run); exactness is checked on float32 builds.
        return
    from transformers import AutoModelForCausalLM
    rng = torch.Generator().manual_seed(SEED + 4)
    ref = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32).eval()
    mm = Gemma4ForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    for n in (5, 80):  # 80 > sliding_window
        x = torch.cat([torch.tensor([[ids["<bos>"]]]), torch.randint(300, VOCAB, (1, n), generator=rng)], 1)
        ya, yb = (m.generate(x, max_new_tokens=24, do_sample=False, pad_token_id=0) for m in (ref, mm))
        assert torch.equal(ya, yb), (ya, yb)
    print("  gemma4-mm greedy == gemma4 greedy (HF float32, 2 prompts x 24 tokens)")


def make_draft(out: Path, *, target_cfg, num_layers: int, target_layer_ids: list[int],
               mask_token_id: int, seed: int, dtype: torch.dtype, block_in_dflash_config: bool,
               sliding_window: int | None = None, heads: int = 4, kv_heads: int = 2,
               head_dim: int = 64, inter: int = 512) -> None:
    k = len(target_layer_ids)
    layer_types = ["full_attention"] * num_layers
    if sliding_window:
        layer_types = ["sliding_attention"] * (num_layers - 1) + ["full_attention"]
    dflash = {"mask_token_id": mask_token_id, "target_layer_ids": list(target_layer_ids)}
    cfg = {
        "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "attention_bias": False,
        "attention_dropout": 0.0, "dflash_config": dflash,
        "num_target_layers": int(target_cfg.num_hidden_layers),
        "bos_token_id": target_cfg.bos_token_id, "eos_token_id": target_cfg.eos_token_id,
        "dtype": str(dtype).removeprefix("torch."), "head_dim": head_dim, "hidden_act": "silu",
        "hidden_size": H, "initializer_range": 0.02, "intermediate_size": inter,
        "layer_types": layer_types, "max_position_embeddings": 4096,
        "max_window_layers": num_layers, "num_attention_heads": heads,
        "num_hidden_layers": num_layers, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_window": sliding_window, "tie_word_embeddings": False, "use_cache": True,
        "use_sliding_window": bool(sliding_window), "vocab_size": VOCAB}
    (dflash if block_in_dflash_config else cfg)["block_size"] = 16  # both forms exist upstream
    write_json(out / "config.json", cfg)
    q, kv = heads * head_dim, kv_heads * head_dim
    layer = [("self_attn.q_proj", (q, H)), ("self_attn.k_proj", (kv, H)), ("self_attn.v_proj", (kv, H)),
             ("self_attn.o_proj", (H, q)), ("self_attn.q_norm", (head_dim,)), ("self_attn.k_norm", (head_dim,)),
             ("mlp.gate_proj", (inter, H)), ("mlp.up_proj", (inter, H)), ("mlp.down_proj", (H, inter)),
             ("input_layernorm", (H,)), ("post_attention_layernorm", (H,))]
    shapes = [(f"layers.{i}.{n}", s) for i in range(num_layers) for n, s in layer]
    shapes += [("fc", (H, k * H)), ("hidden_norm", (H,)), ("norm", (H,))]
    g = torch.Generator().manual_seed(seed)

    def init(shape: tuple[int, ...]) -> torch.Tensor:  # as randomize(): norms ~1, linears ~1/sqrt(fan_in)
        if len(shape) == 1:
            return 1 + 0.05 * torch.randn(shape, generator=g)
        return torch.randn(shape, generator=g) * shape[1] ** -0.5

    sd = {f"{name}.weight": init(shape).to(dtype) for name, shape in shapes}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})


def make_qwen3_pi(out: Path, src: Path, dtype: torch.dtype) -> None:
    """o_proj/down_proj x 1e-3 (layers still run, KV still feeds in, but barely move the residual)
    and lm_head[pi[t]] = embed[t] with equal-norm random embeddings: the final hidden state of
    token t is ~norm(embed[t]), whose dot with its own row (~H) dwarfs the others (~sqrt(H) each),
    so greedy next token == pi[t]."""
    shutil.copytree(src, out, dirs_exist_ok=True)
    g = torch.Generator().manual_seed(SEED + 3)
    order = torch.randperm(VOCAB, generator=g)
    pi = torch.empty(VOCAB, dtype=torch.long)
    pi[order] = order.roll(-1)  # one cycle through every id
    sd = {k: v.float() for k, v in load_file(out / "model.safetensors").items()}
    for k in sd:
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            sd[k] *= 1e-3
    emb = torch.randn(VOCAB, H, generator=g)
    emb = emb / emb.norm(dim=1, keepdim=True) * math.sqrt(H)
    sd["model.embed_tokens.weight"] = emb
    sd["lm_head.weight"] = torch.empty_like(emb).index_copy_(0, pi, emb)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "pi.json").write_text(json.dumps({"pi": pi.tolist()}) + "\n")
    if not CHECKS:
        return
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    x = torch.randint(0, VOCAB, (2, 256), generator=g)
    with torch.no_grad():
        frac = (m(input_ids=x).logits.argmax(-1) == pi[x]).float().mean().item()
    print(f"  qwen3-pi greedy next == pi[token] at {frac:.4f} of {x.numel()} positions (HF float32)")
    assert frac >= 0.99, frac


def make_oracle(out: Path, draft_dir: Path) -> None:
    for f in ("config.json", "model.safetensors"):
        shutil.copy(draft_dir / f, out / f)
    patch_json(out / "config.json", architectures=["DFlashOracleDraftModel"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--skip-checks", action="store_true",
                    help="skip the HF self-checks (gemma4-mm == gemma4, pi property); e.g. on the GPU "
                         "machine, whose newer transformers reads Gemma-4 text configs differently")
    args = ap.parse_args()
    global CHECKS
    CHECKS = not args.skip_checks
    dtype = getattr(torch, args.dtype)
    root: Path = args.out_dir
    # one thread: these tensors are tiny, and on a shared 2-core machine (SGLang servers running)
    # two OpenMP threads per process made the build 3-5x slower
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    t0 = time.time()

    def step(name: str, fn, *a, **kw):
        t = time.time()
        d = root / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        r = fn(d, *a, **kw)
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{name:<16} {size / 2**20:6.2f} MiB {time.time() - t:5.2f} s  {d}", flush=True)
        return r

    q_cfg, q_ids = step("qwen3", make_qwen3, dtype)
    step("qwen3-dflash", make_draft, target_cfg=q_cfg, num_layers=2, target_layer_ids=[1, 2],
         mask_token_id=q_ids["mask"], seed=SEED + 10, dtype=dtype, block_in_dflash_config=False)
    g_cfg, g_ids = step("gemma4", make_gemma4, dtype)
    step("gemma4-dflash", make_draft, target_cfg=g_cfg, num_layers=3, target_layer_ids=[1, 5, 9],
         mask_token_id=g_ids["<mask>"], seed=SEED + 20, dtype=dtype, block_in_dflash_config=True,
         sliding_window=32)
    step("gemma4-mm", make_gemma4_mm, root / "gemma4", g_ids, dtype)
    step("qwen3-pi", make_qwen3_pi, root / "qwen3", dtype)
    step("qwen3-pi-oracle", make_oracle, root / "qwen3-dflash")
    print(f"built {root} ({args.dtype}) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
