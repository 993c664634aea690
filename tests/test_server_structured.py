"""Structured output and logprobs through the real server, with the mostly-right pair (qwen3-pi
target + oracle draft): DFLASH output equals plain decoding's token for token under JSON schemas,
regexes and an EBNF grammar (and is valid under them), acceptance stays well above one token
per step under constraints, logprobs equal plain decoding's, and the OpenAI response_format /
tool-calling paths work."""

import json
import os
import re

import jsonschema
import pytest
import requests
from transformers import AutoTokenizer

from helpers import cpu_server_args, dflash_args, free_port, server, tiny_models
from test_server_acceptance import ORACLE_ENV, pi_walk
from workload import LOGPROB_KEYS, logprob_error

pytestmark = pytest.mark.slow

# Bounded schemas: every string, number and array has a limit, so generation always completes.
# Strings are limited by ASCII patterns: the random-token target can emit bytes that only decode
# to replacement characters, which a length check would count differently.
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
     "required": ["color", "ok"], "additionalProperties": False},
    {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
                                      "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,4}$"},
                                               "maxItems": 2}},
     "required": ["id", "tags"], "additionalProperties": False},
    {"type": "object", "properties": {
        "point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                                                   "y": {"type": "integer", "minimum": -9, "maximum": 9}},
                  "required": ["x", "y"], "additionalProperties": False},
        "label": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^[a-z ]{1,5}$"}]}},
     "required": ["point", "label"], "additionalProperties": False},
]
REGEXES = [r"[0-9]{3}-[a-z]{2,6}", r"(red|green|blue)( (red|green|blue)){0,3}", r"[A-Z][a-z]{1,8}( [a-z]{1,8}){0,4}\."]
EBNF = 'root ::= greeting " " name "!"\ngreeting ::= "hello" | "hi" | "hey"\nname ::= [A-Z] [a-z] [a-z]? [a-z]?'
EBNF_AS_REGEX = r"(hello|hi|hey) [A-Z][a-z]{1,3}!"
REGEX_META = set("\\^$.|?*+()[]{}/-")
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "pattern": "^[A-Za-z]{1,8}$"},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


def escape(text: str) -> str:
    return "".join("\\" + c if c in REGEX_META else c for c in text)


def walk_regex(models: str, pi: list, length: int = 40) -> tuple[list[int], str]:
    """A prompt and a regex matching exactly the text the pi target continues it with: the
    constraint then agrees with the target (and the oracle draft) on every token."""
    tok = AutoTokenizer.from_pretrained(os.path.join(models, "qwen3-pi"))
    special = set(tok.all_special_ids)

    def plain(t):
        s = tok.decode([t])
        return t < len(tok) and t not in special and s and all(" " <= c <= "~" for c in s)

    for start in range(3, len(pi)):
        walk = pi_walk(pi, start, length)
        if all(plain(t) for t in walk):
            return [11, 12, start], escape("".join(tok.decode([t]) for t in walk))
    raise AssertionError("no printable pi walk")


def constrained_cases(models: str, pi: list) -> list[tuple[str, dict, object]]:
    """(name, request body, validator of the output text)."""
    sp = {"temperature": 0, "max_new_tokens": 96}
    cases = []
    for i, schema in enumerate(SCHEMAS):
        cases.append((f"json{i}", {"input_ids": [20 + i, 30 + 7 * i], "sampling_params": {
            **sp, "json_schema": json.dumps(schema)}}, lambda text, s=schema: jsonschema.validate(json.loads(text), s)))
    for i, rx in enumerate(REGEXES):
        cases.append((f"regex{i}", {"input_ids": [50 + i, 60 + 5 * i], "sampling_params": {**sp, "regex": rx}},
                      lambda text, r=rx: re.fullmatch(r, text) or pytest.fail(f"{text!r} !~ {r}")))
    cases.append(("ebnf", {"input_ids": [70, 71], "sampling_params": {**sp, "ebnf": EBNF}},
                  lambda text: re.fullmatch(EBNF_AS_REGEX, text) or pytest.fail(f"{text!r} !~ EBNF")))
    prompt, rx = walk_regex(models, pi)
    cases.append(("walk_regex", {"input_ids": prompt, "sampling_params": {**sp, "regex": rx}},
                  lambda text, r=rx: re.fullmatch(r, text) or pytest.fail(f"{text!r} !~ walk")))
    cases.append(("printable", {"input_ids": [90, 91], "sampling_params": {
        "temperature": 0, "max_new_tokens": 64, "regex": "[ -~]+"}},
        lambda text: re.fullmatch("[ -~]+", text) or pytest.fail(f"{text!r} not printable")))
    return cases


def logprob_cases() -> list[tuple[str, dict]]:
    lp = {"return_logprob": True, "top_logprobs_num": 5}
    sp = {"temperature": 0, "max_new_tokens": 40, "ignore_eos": True}
    return [
        ("logprobs", {"input_ids": [5, 6, 7, 8, 9, 10], "sampling_params": sp, **lp, "logprob_start_len": 2}),
        ("logprobs_token_ids", {"input_ids": [40, 41, 42], "sampling_params": sp, **lp,
                                "token_ids_logprob": [3, 4, 5], "logprob_start_len": 0}),
        ("logprobs_batch", {"input_ids": [[100, 101], [200, 201, 202]], "sampling_params": sp,
                            "return_logprob": True, "top_logprobs_num": [5, 2], "logprob_start_len": [1, 0]}),
        ("logprobs_regex", {"input_ids": [80, 81], "sampling_params": {
            "temperature": 0, "max_new_tokens": 40, "regex": "[a-z ]{1,60}"}, **lp}),
    ]


def openai_cases() -> list[tuple[str, dict]]:
    msg = [{"role": "user", "content": "Who are you?"}]
    # The template's thinking switch: without it the tool-call grammar leaves room for free thinking first.
    base = {"model": "default", "messages": msg, "max_tokens": 96, "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False}}
    return [
        ("response_format", {**base, "response_format": {"type": "json_schema", "json_schema": {
            "name": "person", "schema": SCHEMAS[0], "strict": True}}}),
        ("tool_named", {**base, "tools": [TOOL], "parallel_tool_calls": False,
                        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ("tool_auto", {**base, "tools": [TOOL], "tool_choice": "auto", "max_tokens": 24}),
        ("chat_logprobs", {**base, "max_tokens": 16, "logprobs": True, "top_logprobs": 5}),
    ]


def run(url, constrained, logprobs, openai) -> dict:
    out = {}
    batch = requests.post(url + "/generate", json={  # every constrained request in one batch
        "input_ids": [body["input_ids"] for _, body, _ in constrained] + [[7, 8]],
        "sampling_params": [body["sampling_params"] for _, body, _ in constrained]
        + [{"temperature": 0, "max_new_tokens": 48, "ignore_eos": True}],  # an unconstrained neighbour
    }, timeout=600)
    batch.raise_for_status()
    out["batch"] = batch.json()
    for name, body in logprobs:
        r = requests.post(url + "/generate", json=body, timeout=600)
        r.raise_for_status()
        out[name] = r.json()
    for name, body in openai:
        r = requests.post(url + "/v1/chat/completions", json=body, timeout=600)
        assert r.status_code == 200, (name, r.text)
        out[name] = r.json()
    return out


def assert_close(a, b, what):
    """Equal structure and token ids; logprobs within 1e-4, relative beyond magnitude 1: the pi
    target's runner-up logprobs are near -200, where float32 rounding of the logits alone is
    ~1e-5 (the random-weight pairs in test_server_lossless check 1e-4 absolute)."""
    worst = logprob_error(a, b, relative_beyond_one=True)
    assert worst <= 1e-4, (what, worst)


def test_structured_output_and_logprobs(tmp_path):
    models = tiny_models()
    with open(os.path.join(models, "qwen3-pi", "pi.json")) as f:
        pi = json.load(f)["pi"]
    constrained, logprobs, openai = constrained_cases(models, pi), logprob_cases(), openai_cases()
    target = os.path.join(models, "qwen3-pi")
    # Without free whitespace a JSON value has nowhere to wander: outputs complete within the limit.
    # The qwen25 tool parser constrains tool calls with structural tags.
    extra = ["--constrained-json-disable-any-whitespace", "--tool-call-parser", "qwen25"]
    with server(cpu_server_args(target, free_port()) + extra, tmp_path / "plain.log") as srv:
        plain = run(srv.url, constrained, logprobs, openai)
    args = cpu_server_args(target, free_port()) + extra + dflash_args(os.path.join(models, "qwen3-pi-oracle"))
    with server(args, tmp_path / "dflash.log", env=ORACLE_ENV) as srv:
        spec = run(srv.url, constrained, logprobs, openai)
        log = srv.log()
    (tmp_path / "outputs.json").write_text(json.dumps({"plain": plain, "dflash": spec}))
    assert "Traceback" not in log

    # Greedy structured output: token for token plain decoding's, and valid.
    for (name, _, valid), p, s in zip(constrained, plain["batch"], spec["batch"]):
        assert s["output_ids"] == p["output_ids"], name
        assert s["meta_info"]["finish_reason"] == p["meta_info"]["finish_reason"], name
        if name != "printable":  # the open-ended one stops at max_new_tokens
            assert s["meta_info"]["finish_reason"]["type"] == "stop", (name, s["meta_info"]["finish_reason"])
        valid(s["text"])
    assert spec["batch"][-1]["output_ids"] == plain["batch"][-1]["output_ids"]
    accept = {name: o["meta_info"]["completion_tokens"] / o["meta_info"]["spec_verify_ct"]
              for (name, _, _), o in zip(constrained, spec["batch"])}
    assert accept["printable"] > 2.0, accept
    assert accept["walk_regex"] >= 4.0, accept  # agrees with the target everywhere: as unconstrained
    json_steps = sum(o["meta_info"]["spec_verify_ct"] for o in spec["batch"][:len(SCHEMAS)])
    json_tokens = sum(o["meta_info"]["completion_tokens"] for o in spec["batch"][:len(SCHEMAS)])
    assert json_tokens / json_steps > 1.0, accept
    print("acceptance under constraints:", {k: round(v, 2) for k, v in accept.items()})

    # Logprobs: the target's own numbers for every emitted token, and the prompt's.
    for name, _ in logprobs:
        p, s = plain[name], spec[name]
        for po, so in zip(p if isinstance(p, list) else [p], s if isinstance(s, list) else [s]):
            assert so["output_ids"] == po["output_ids"], name
            assert so["meta_info"]["spec_verify_ct"] < len(so["output_ids"]), name  # multi-token steps
            for key in LOGPROB_KEYS:
                assert_close(so["meta_info"].get(key), po["meta_info"].get(key), (name, key))
            assert len(so["meta_info"]["output_token_logprobs"]) == len(so["output_ids"]), name
    top = spec["logprobs"]["meta_info"]["output_top_logprobs"]
    assert all(len(row) == 5 for row in top)
    assert len(spec["logprobs"]["meta_info"]["input_token_logprobs"]) == 6 - 2

    # OpenAI API: response_format json_schema and tool calls, as plain serves them.
    for name, _ in openai:
        p, s = plain[name]["choices"][0], spec[name]["choices"][0]
        for call in (p["message"].get("tool_calls") or []) + (s["message"].get("tool_calls") or []):
            call.pop("id")  # random per response
        assert s["message"] == p["message"], name
        assert s["finish_reason"] == p["finish_reason"], name
        if name == "chat_logprobs":
            assert_close(s["logprobs"], p["logprobs"], name)
    person = json.loads(spec["response_format"]["choices"][0]["message"]["content"])
    jsonschema.validate(person, SCHEMAS[0])
    # The qwen tool parser's structural tag fixes the call's frame and name; its arguments are free
    # JSON unless the tool is strict (then free whitespace, which a random target never ends).
    (call,) = spec["tool_named"]["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    json.loads(call["function"]["arguments"])
