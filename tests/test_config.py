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


@pytest.mark.slow
@pytest.mark.parametrize("case", ["hidden_size", "missing fc", "no such path"])
def test_launcher_fails_fast_with_the_message(models, tmp_path, case):
    if case == "hidden_size":
        draft = broken_copy(models, tmp_path, edit_config=lambda c: c.update(hidden_size=c["hidden_size"] + 8))
        expect = "field 'hidden_size': draft hidden size"
    elif case == "missing fc":
        draft = broken_copy(models, tmp_path, edit_weights=lambda sd: sd.pop("fc.weight"))
        expect = "field 'fc.weight': tensor missing"
    else:
        draft, expect = str(tmp_path / "nowhere"), "does not exist or is not a directory"
    args = cpu_server_args(os.path.join(models, "qwen3"), free_port()) + dflash_args(draft)
    out = run_launcher(args, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert expect in text, text[-3000:]
    assert "Load weight" not in text  # failed before any model was built
