"""Installing the package is enough: SGLang's plugin loader activates our DFLASH in every process,
and SGLANG_DFLASH_IMPL=builtin hands DFLASH back to SGLang's own worker."""

import os
import subprocess
import sys

import pytest

from helpers import cpu_server_args, dflash_args, free_port, run_launcher, server_env, tiny_models

PROBE = """
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
cls = SpeculativeAlgorithm.from_string("DFLASH").create_worker(None)
print("WORKER", cls.__module__ + "." + cls.__qualname__)
"""


def worker_class(env_extra):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=server_env(env_extra),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [l for l in out.stdout.splitlines() if l.startswith("WORKER")][0].split()[1]


def test_entry_point_is_registered():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")}
    assert eps.get("sglang_dflash") == "sglang_dflash.integration.plugin:load"


def test_default_is_ours_and_switch_selects_builtin():
    assert worker_class({}) == "sglang_dflash.worker.DFlashWorker"
    assert worker_class({"SGLANG_DFLASH_IMPL": "builtin"}) == "sglang.srt.speculative.dflash_worker_v2.DFlashWorkerV2"


@pytest.mark.slow
def test_bad_switch_value_fails_the_launch():
    models = tiny_models()
    args = cpu_server_args(os.path.join(models, "qwen3"), free_port()) + dflash_args(os.path.join(models, "qwen3-dflash"))
    out = run_launcher(args, env={"SGLANG_DFLASH_IMPL": "nonsense"}, timeout=240)
    assert out.returncode != 0
    assert "SGLANG_DFLASH_IMPL='nonsense'" in out.stdout + out.stderr


@pytest.mark.slow
def test_builtin_switch_reaches_sglangs_own_argument_handling():
    """SGLang's built-in DFLASH refuses CPU devices in its own argument handler: reaching that
    message through the unchanged launch command proves the switch hands DFLASH back to SGLang."""
    models = tiny_models()
    args = cpu_server_args(os.path.join(models, "qwen3"), free_port()) + dflash_args(os.path.join(models, "qwen3-dflash"))
    out = run_launcher(args, env={"SGLANG_DFLASH_IMPL": "builtin"}, timeout=240)
    assert out.returncode != 0
    assert "DFLASH speculative decoding only supports CUDA and NPU devices" in out.stdout + out.stderr


ADMISSION_PROBE = """
import sys
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.managers.min_free_slots_delayer import resolve_min_free_slots
from sglang.srt.server_args import ServerArgs
extra = {} if sys.argv[3] == "unset" else {"min_free_slots_delay": int(sys.argv[3])}
args = ServerArgs(model_path=sys.argv[1], device="cpu", attention_backend="torch_native",
                  speculative_algorithm="DFLASH", speculative_draft_model_path=sys.argv[2], **extra)
print("DELAY", resolve_min_free_slots(args.min_free_slots_delay, args.max_running_requests, is_dflash_family=True))
"""


@pytest.mark.parametrize("asked,held", [("unset", "None"), ("3", "3")])
def test_prefill_admission_is_not_held_back_unless_asked(asked, held):
    """SGLang holds DFLASH prefills until several request slots are free (its worker's draft prefill
    is a forward of its own; ours is a projection inside the target's prefill step): our argument
    handling turns that off unless the launch sets --min-free-slots-delay."""
    models = tiny_models()
    out = subprocess.run([sys.executable, "-c", ADMISSION_PROBE, os.path.join(models, "qwen3"),
                          os.path.join(models, "qwen3-dflash"), asked],
                         capture_output=True, text=True, env=server_env({}), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [l for l in out.stdout.splitlines() if l.startswith("DELAY")] == [f"DELAY {held}"]
