"""The tiny-model builder (scripts/make_tiny_models.py): same bytes on every build, the --dtype
flag, the z-lab draft layout, Gemma-4's multimodal checkpoint form and the "pi" target.
Builds three model sets in a temporary directory (about 10 s each on 2 cores); no servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "scripts" / "make_tiny_models.py"
TARGETS = ["qwen3", "gemma4", "gemma4-mm", "qwen3-pi"]
DRAFTS = ["qwen3-dflash", "gemma4-dflash", "qwen3-pi-oracle"]


def build(out: Path, dtype: str) -> Path:
    r = subprocess.run([sys.executable, str(BUILDER), str(out), "--dtype", dtype],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture(scope="module")
def f32(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("f32") / "models", "float32")


@pytest.fixture(scope="module")
def bf16(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("bf16") / "models", "bfloat16")


def cfg(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def text_cfg(d: Path) -> dict:
    c = cfg(d)
    return c.get("text_config") or c


def files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_bytes_every_build(f32, tmp_path):
    a, b = files(f32), files(build(tmp_path / "again", "float32"))
    assert set(a) == set(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert {p.split("/")[0] for p in a} == set(TARGETS + DRAFTS)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype_flag(f32, bf16, dtype):
    root = f32 if dtype == "float32" else bf16
    for name in TARGETS + DRAFTS:
        tensors = load_file(root / name / "model.safetensors")
        assert {t.dtype for t in tensors.values()} == {getattr(torch, dtype)}
        assert cfg(root / name)["dtype"] == dtype
    assert cfg(root / "gemma4-mm")["text_config"]["dtype"] == dtype


@pytest.mark.parametrize("draft,target", [("qwen3-dflash", "qwen3"), ("gemma4-dflash", "gemma4"),
                                          ("gemma4-dflash", "gemma4-mm")])
def test_draft_layout(f32, draft, target):
    from transformers import AutoTokenizer
    d, t = cfg(f32 / draft), text_cfg(f32 / target)
    dc = d["dflash_config"]
    assert d["architectures"] == ["DFlashDraftModel"] and d["model_type"] == "qwen3"
    assert d["hidden_size"] == t["hidden_size"] and d["num_target_layers"] == t["num_hidden_layers"]
    ids = dc["target_layer_ids"]
    assert ids == sorted(set(ids)) and 0 <= ids[0] and ids[-1] < t["num_hidden_layers"]
    tok = AutoTokenizer.from_pretrained(f32 / target)
    assert 0 <= dc["mask_token_id"] < t["vocab_size"]
    if draft == "qwen3-dflash":  # z-lab Qwen3 form: block_size at the top, mask = first id past the tokenizer
        assert d["block_size"] == 16 and "block_size" not in dc
        assert dc["mask_token_id"] == len(tok)
        assert d["layer_types"] == ["full_attention"] * d["num_hidden_layers"]
    else:  # newer form: block_size in dflash_config, sliding layers then one full layer
        assert dc["block_size"] == 16 and "block_size" not in d
        assert dc["mask_token_id"] == tok.convert_tokens_to_ids("<mask>") == 4
        n = d["num_hidden_layers"]
        assert d["layer_types"] == ["sliding_attention"] * (n - 1) + ["full_attention"]
        assert isinstance(d["sliding_window"], int) and d["use_sliding_window"]

    w = load_file(f32 / draft / "model.safetensors")
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "self_attn.q_norm", "self_attn.k_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                 "input_layernorm", "post_attention_layernorm"]
    expected = {f"layers.{i}.{n}.weight" for i in range(d["num_hidden_layers"]) for n in per_layer}
    assert set(w) == expected | {"fc.weight", "hidden_norm.weight", "norm.weight"}
    h, hd = d["hidden_size"], d["head_dim"]
    assert w["fc.weight"].shape == (h, len(ids) * h)
    assert w["layers.0.self_attn.q_proj.weight"].shape == (d["num_attention_heads"] * hd, h)
    assert w["layers.0.self_attn.k_proj.weight"].shape == (d["num_key_value_heads"] * hd, h)
    for k, v in w.items():
        if "norm" in k:  # near 1, not exactly: a loader that skips a norm is visible
            assert (v - 1).abs().max() < 0.5 and not torch.all(v == 1), k


def test_oracle_is_the_draft_renamed(f32):
    a, b = cfg(f32 / "qwen3-dflash"), cfg(f32 / "qwen3-pi-oracle")
    assert b.pop("architectures") == ["DFlashOracleDraftModel"]
    a.pop("architectures")
    assert a == b
    weights = [(f32 / d / "model.safetensors").read_bytes() for d in ("qwen3-dflash", "qwen3-pi-oracle")]
    assert weights[0] == weights[1]


def test_gemma4_like_31b(f32):
    c = cfg(f32 / "gemma4")
    assert c["architectures"] == ["Gemma4ForCausalLM"] and c["model_type"] == "gemma4_text"
    lt = c["layer_types"]
    assert len(lt) % 6 == 0 and lt == (["sliding_attention"] * 5 + ["full_attention"]) * (len(lt) // 6)
    assert c["global_head_dim"] != c["head_dim"] and c["attention_k_eq_v"]
    assert c["num_global_key_value_heads"] >= 1  # equal to the sliding count: see gemma4_text_config
    assert c["tie_word_embeddings"] and c["final_logit_softcapping"] == 30.0
    assert c["sliding_window"] < 150  # test prompts run past the window
    w = load_file(f32 / "gemma4/model.safetensors")
    assert "lm_head.weight" not in w
    for i, kind in enumerate(lt):  # k_eq_v: full layers have no v_proj
        assert (f"model.layers.{i}.self_attn.v_proj.weight" in w) == (kind == "sliding_attention")
    k = w["model.layers.5.self_attn.k_proj.weight"]
    assert k.shape == (c["num_global_key_value_heads"] * c["global_head_dim"], c["hidden_size"])


def test_gemma4_mm_is_gemma4_in_multimodal_form(f32):
    from transformers import AutoModelForCausalLM, Gemma4ForConditionalGeneration
    c, t = cfg(f32 / "gemma4-mm"), cfg(f32 / "gemma4")
    assert c["architectures"] == ["Gemma4ForConditionalGeneration"] and c["model_type"] == "gemma4"
    assert c["vision_config"]["model_type"] == "gemma4_vision" and c["audio_config"] is None
    skip = {"architectures", "transformers_version"}
    assert {k: v for k, v in c["text_config"].items() if k not in skip} == \
        {k: v for k, v in t.items() if k not in skip}
    for key in ("image_token_id", "boi_token_id", "eoi_token_id", "video_token_id", "audio_token_id"):
        assert 0 <= c[key] < t["vocab_size"]
    proc = json.loads((f32 / "gemma4-mm/processor_config.json").read_text())
    assert proc["processor_class"] == "Gemma4Processor"
    mm, text = load_file(f32 / "gemma4-mm/model.safetensors"), load_file(f32 / "gemma4/model.safetensors")
    assert {k: v for k, v in mm.items() if k.startswith("model.language_model.")}.keys() == \
        {"model.language_model." + k.removeprefix("model.") for k in text}
    for k, v in text.items():
        assert torch.equal(mm["model.language_model." + k.removeprefix("model.")], v), k
    assert all(k.startswith(("model.language_model.", "model.vision_tower.", "model.embed_vision."))
               for k in mm)
    x = torch.randint(300, t["vocab_size"], (1, 100), generator=torch.Generator().manual_seed(0))
    text_model = AutoModelForCausalLM.from_pretrained(f32 / "gemma4", dtype=torch.float32)
    mm_model = Gemma4ForConditionalGeneration.from_pretrained(f32 / "gemma4-mm", dtype=torch.float32)
    with torch.no_grad():
        a, b = text_model(input_ids=x).logits, mm_model(input_ids=x).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pi_target(f32, bf16, dtype):
    from transformers import AutoModelForCausalLM
    d = (f32 if dtype == "float32" else bf16) / "qwen3-pi"
    pi = json.loads((d / "pi.json").read_text())["pi"]
    vocab = cfg(d)["vocab_size"]
    assert sorted(pi) == list(range(vocab))
    t, steps = 0, 0
    while True:  # one cycle through every id
        t, steps = pi[t], steps + 1
        if t == 0:
            break
    assert steps == vocab
    w = load_file(d / "model.safetensors")
    assert torch.equal(w["lm_head.weight"][torch.tensor(pi)], w["model.embed_tokens.weight"])
    assert set(w) == set(load_file(d.parent / "qwen3/model.safetensors"))

    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    x = torch.randint(0, vocab, (2, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        frac = (m(input_ids=x).logits.argmax(-1) == torch.tensor(pi)[x]).float().mean().item()
        out = m.generate(x[:1, :20], max_new_tokens=32, do_sample=False, pad_token_id=0)[0].tolist()
    assert frac >= 0.99
    chain = out[19:]
    assert sum(pi[a] == b for a, b in zip(chain, chain[1:])) >= 31


@pytest.mark.parametrize("name", TARGETS)
def test_tokenizer_and_chat_template(f32, name):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(f32 / name)
    assert max(tok.get_vocab().values()) < text_cfg(f32 / name)["vocab_size"]
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    text = tok.decode(ids)
    assert "What is the capital of France?" in text and text.endswith(("assistant\n", "model\n"))
    assert tok.decode(tok("Hello world", add_special_tokens=False).input_ids) == "Hello world"
