"""Draft checkpoints: both tiny drafts load with our config parser and model; every bad config fails
with one message naming its field (directly, and through the unchanged launch command)."""

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from helpers import cpu_server_args, dflash_args, free_port, run_launcher, tiny_models
from sglang_dflash.config import (
    DraftConfigError,
    check_draft_weights,
    default_target_layer_ids,
    load_json_config,
    parse_draft_config,
    target_shape_from_config,
)

PAIRS = [("qwen3", "qwen3-dflash"), ("gemma4", "gemma4-dflash"), ("gemma4-mm", "gemma4-dflash")]


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def load(models, target, draft):
    t = target_shape_from_config(load_json_config(os.path.join(models, target), "target"))
    return t, load_json_config(os.path.join(models, draft), "draft")


@pytest.mark.parametrize("target,draft", PAIRS)
def test_tiny_drafts_parse(models, target, draft):
    shape, cfg = load(models, target, draft)
    parsed = parse_draft_config(cfg, shape)
    check_draft_weights(os.path.join(models, draft), parsed)
    assert parsed.block_size == 16 and parsed.hidden_size == shape.hidden_size
    if "layer_types" in cfg:  # gemma4-dflash: sliding layers causal, the full one bidirectional
        assert parsed.layer_causal == tuple(t == "sliding_attention" for t in cfg["layer_types"])
        assert parsed.sliding_window == cfg["sliding_window"]
    else:
        assert not any(parsed.layer_causal)


def test_block_size_in_either_place(models):
    shape, cfg = load(models, "qwen3", "qwen3-dflash")
    assert "block_size" in cfg and "block_size" not in cfg["dflash_config"]
    _, gcfg = load(models, "gemma4", "gemma4-dflash")
    assert "block_size" in gcfg["dflash_config"]
    assert parse_draft_config(cfg, shape, block_size_override=8).block_size == 8


def test_default_target_layer_rule():
    # gemma-4-31B-it-DFlash names [1, 12, 23, 35, 46, 57]; the rule must reproduce it.
    assert default_target_layer_ids(6, 60) == [1, 12, 23, 35, 46, 57]
    assert default_target_layer_ids(1, 36) == [18]


def test_explicit_causal_flag_wins(models):
    shape, cfg = load(models, "gemma4", "gemma4-dflash")
    cfg["dflash_config"]["causal"] = True
    assert all(parse_draft_config(cfg, shape).layer_causal)
    cfg["dflash_config"]["causal"] = False
    assert not any(parse_draft_config(cfg, shape).layer_causal)


def test_missing_ids_use_default_rule(models):
    shape, cfg = load(models, "gemma4", "gemma4-dflash")
    del cfg["dflash_config"]["target_layer_ids"]
    assert list(parse_draft_config(cfg, shape).target_layer_ids) == default_target_layer_ids(
        cfg["num_hidden_layers"], shape.num_layers) == [1, 5, 9]


def test_default_rule_that_repeats_a_layer_is_refused(models):
    # 2 draft layers on a 4-layer target: the rule gives [1, 1]; SGLang would capture layer 1 once.
    shape, cfg = load(models, "qwen3", "qwen3-dflash")
    del cfg["dflash_config"]["target_layer_ids"]
    with pytest.raises(DraftConfigError, match="repeats a layer id"):
        parse_draft_config(cfg, shape)


CONFIG_ERRORS = [
    ("target_layer_ids out of range", lambda c, s: c["dflash_config"].update(target_layer_ids=[0, s.num_layers]),
     "dflash_config.target_layer_ids", "outside the target's layers"),
    ("target_layer_ids empty", lambda c, s: c["dflash_config"].update(target_layer_ids=[]),
     "dflash_config.target_layer_ids", "non-empty"),
    ("hidden size", lambda c, s: c.update(hidden_size=c["hidden_size"] * 2), "hidden_size", "differs from the target"),
    ("mask id", lambda c, s: c["dflash_config"].update(mask_token_id=s.vocab_size), "dflash_config.mask_token_id",
     "outside the target vocabulary"),
    ("block size", lambda c, s: c.update(block_size=1), "block_size", "block size must be"),
    ("layer types", lambda c, s: c.update(layer_types=["sliding_attention"]), "layer_types", "entries"),
]


@pytest.mark.parametrize("name,mutate,field,words", CONFIG_ERRORS, ids=[e[0] for e in CONFIG_ERRORS])
def test_config_errors_name_their_field(models, name, mutate, field, words):
    shape, cfg = load(models, "qwen3", "qwen3-dflash")
    mutate(cfg, shape)
    with pytest.raises(DraftConfigError) as e:
        parse_draft_config(cfg, shape)
    assert e.value.field == field and words in str(e.value) and f"'{field}'" in str(e.value)


def broken_copy(models, tmp_path, edit_weights=None, edit_config=None):
    out = tmp_path / "draft"
    shutil.copytree(os.path.join(models, "qwen3-dflash"), out)
    if edit_config:
        cfg = json.loads((out / "config.json").read_text())
        edit_config(cfg)
        (out / "config.json").write_text(json.dumps(cfg))
    if edit_weights:
        path = out / "model.safetensors"
        sd = load_file(path)
        edit_weights(sd)
        save_file(sd, path)
    return str(out)


def test_weight_errors(models, tmp_path):
    shape, cfg = load(models, "qwen3", "qwen3-dflash")
    parsed = parse_draft_config(cfg, shape)
    no_fc = broken_copy(models, tmp_path / "a", edit_weights=lambda sd: sd.pop("fc.weight"))
    with pytest.raises(DraftConfigError, match="'fc.weight': tensor missing"):
        check_draft_weights(no_fc, parsed)
    bad_fc = broken_copy(models, tmp_path / "b", edit_weights=lambda sd: sd.update({"fc.weight": sd["fc.weight"][:, :-1].contiguous()}))
    with pytest.raises(DraftConfigError, match=r"'fc.weight': shape .*K=\d+ target layers x H=\d+"):
        check_draft_weights(bad_fc, parsed)
    no_layer = broken_copy(models, tmp_path / "c", edit_weights=lambda sd: sd.pop("layers.0.mlp.up_proj.weight"))
    with pytest.raises(DraftConfigError, match="'layers.0.mlp.up_proj.weight': tensor missing"):
        check_draft_weights(no_layer, parsed)


def draft_dir(models, tmp_path, case):
    """A draft path that is wrong in the way ``case`` names."""
    if case == "no such path":
        return str(tmp_path / "nowhere")
    if case == "a file, not a directory":
        return os.path.join(models, "qwen3-dflash", "config.json")
    out = broken_copy(models, tmp_path)
    cfg = os.path.join(out, "config.json")
    if case == "no config.json":
        os.remove(cfg)
    elif case == "unreadable config.json":  # (a directory: unreadable even to root, who ignores modes)
        os.remove(cfg)
        os.mkdir(cfg)
    elif case == "config.json not JSON":
        with open(cfg, "w") as f:
            f.write("{not json")
    elif case == "no weights":
        os.remove(os.path.join(out, "model.safetensors"))
    return out


def edited(**changes):
    return lambda c: c.update(changes)


DRAFT = "sglang_dflash_default_draft"
LAUNCH_ERRORS = [
    # (case, draft (a case of draft_dir, or a config edit), extra flags, what the one line must say)
    ("no such path", "no such path", [], "does not exist or is not a directory"),
    ("a file, not a directory", "a file, not a directory", [], "does not exist or is not a directory"),
    ("no config.json", "no config.json", [], "field 'config.json': cannot read"),
    ("unreadable config.json", "unreadable config.json", [], "field 'config.json': cannot read"),
    ("config.json not JSON", "config.json not JSON", [], "is not valid JSON"),
    ("no weights", "no weights", [], "no *.safetensors file"),
    ("missing fc", "missing fc", [], "field 'fc.weight': tensor missing"),
    ("hidden size", edited(hidden_size=136), [], "field 'hidden_size': draft hidden size 136 differs"),
    ("vocabulary", edited(vocab_size=4096), [], "field 'vocab_size': draft vocabulary size 4096 differs"),
    ("target depth", edited(num_target_layers=36), [], "field 'num_target_layers': draft target layer count 36"),
    ("layer ids", lambda c: c["dflash_config"].update(target_layer_ids=[1, 7]), [],
     "entry 1 = 7 is outside the target's layers [0, 4)"),
    ("block size 1", DRAFT, ["--speculative-num-draft-tokens", "1"], "block size must be an integer in [2, 64], got 1"),
    ("block size 65", DRAFT, ["--speculative-num-draft-tokens", "65"], "block size must be an integer in [2, 64], got 65"),
    ("block sizes differ", DRAFT, ["--speculative-dflash-block-size", "8"],
     "--speculative-num-draft-tokens and --speculative-dflash-block-size differ"),
    ("GPU draft backend on CPU", DRAFT, ["--speculative-draft-attention-backend", "flashinfer"],
     "--speculative-draft-attention-backend 'flashinfer' is not supported on device 'cpu'"),
    ("unknown draft backend", DRAFT, ["--speculative-draft-attention-backend", "warp_drive"], "warp_drive"),
    ("eagle topk", DRAFT, ["--speculative-eagle-topk", "4"], "--speculative-eagle-topk 4 does not apply"),
    ("draft window", DRAFT, ["--speculative-draft-window-size", "64"], "does not support --speculative-draft-window-size"),
    ("dp attention", DRAFT, ["--enable-dp-attention"], "dp"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,draft,flags,expect", LAUNCH_ERRORS, ids=[e[0] for e in LAUNCH_ERRORS])
def test_launcher_fails_fast_with_one_clear_line(models, tmp_path, case, draft, flags, expect):
    """Through the unchanged launch command: it exits in the launcher, before any model is built,
    and its last line on stderr is the one message naming the problem."""
    if draft == DRAFT:
        path = os.path.join(models, "qwen3-dflash")
    elif callable(draft):
        path = broken_copy(models, tmp_path, edit_config=draft)
    elif draft == "missing fc":
        path = broken_copy(models, tmp_path, edit_weights=lambda sd: sd.pop("fc.weight"))
    else:
        path = draft_dir(models, tmp_path, draft)
    args = cpu_server_args(os.path.join(models, "qwen3"), free_port()) + dflash_args(path)
    if "--speculative-num-draft-tokens" in flags:
        i = args.index("--speculative-num-draft-tokens")
        del args[i:i + 2]
    out = run_launcher(args + flags, timeout=240)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0
    assert expect in last, out.stderr[-3000:]
    assert "Load weight" not in out.stdout + out.stderr  # failed before any model was built
    if "DFLASH" in last:  # ours: the argparse way, no traceback through SGLang
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]


def test_gpu_draft_backend_default_and_fa4_without_flash_attn():
    """On a GPU the draft runs under triton unless told otherwise; fa4 without flash-attn-4
    installed is refused with the fix in the message, not left to fail inside SGLang."""
    import importlib.util
    from types import SimpleNamespace

    from sglang_dflash.integration.server_args import DFlashArgError, _resolve_draft_backend

    args = SimpleNamespace(device="cuda", speculative_draft_attention_backend=None)
    assert _resolve_draft_backend(args) == "triton"
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(DFlashArgError, match="needs flash-attn-4"):
            _resolve_draft_backend(SimpleNamespace(device="cuda", speculative_draft_attention_backend="fa4"))
