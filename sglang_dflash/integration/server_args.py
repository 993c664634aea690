"""Server-argument handling for ``--speculative-algorithm DFLASH`` when our worker is active.

Runs in the launcher process before any model is built, so a bad draft or a bad flag fails in
seconds with one message that names the problem.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any, Callable

from sglang_dflash.config import (
    DraftConfig,
    DraftConfigError,
    check_draft_weights,
    load_json_config,
    parse_draft_config,
    target_shape_from_config,
)

logger = logging.getLogger("sglang_dflash")

GPU_DRAFT_BACKENDS = ("fa4", "triton", "fa3", "flashinfer")
CPU_DRAFT_BACKENDS = ("torch_native",)
# Test-only: keep the overlap scheduler on a CPU (see handle_dflash_server_args).
CPU_OVERLAP_ENV = "SGLANG_DFLASH_TEST_CPU_OVERLAP"


class DFlashArgError(ValueError):
    pass


def from_the_command_line() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name == "sglang.launch_server") or os.path.basename(sys.argv[0]) == "sglang"


def fail_like_argparse(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """A bad flag or draft given to the launch command ends it the way argparse does: one line
    on stderr, exit status 2, no traceback through SGLang's argument handling.  Library callers
    (``sglang.Engine``) get the exception."""

    def run(server_args) -> None:
        try:
            check(server_args)
        except (DFlashArgError, DraftConfigError) as e:
            if not from_the_command_line():
                raise
            print(f"sglang.launch_server: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return run


def check_local_draft_path(path) -> None:
    """A path that is clearly local (absolute or ./-relative) must be a checkpoint directory, and
    a local checkpoint's config.json readable JSON (SGLang parses it next, with a deep traceback)."""
    if path and os.path.isdir(path):
        load_json_config(path, f"draft {path}")
    elif path and (os.path.isabs(path) or path.startswith(".")):
        raise DraftConfigError("path", f"{path!r} does not exist or is not a directory", f"draft {path}")


def _read_config(path: str, what: str, server_args) -> dict:
    if os.path.isdir(path):
        return load_json_config(path, what)
    if os.path.exists(path):
        raise DraftConfigError("path", f"{path!r} is a file; give the checkpoint directory", what)
    try:  # a hub id: let SGLang/transformers fetch the config
        from sglang.srt.utils.hf_transformers_utils import get_config

        return get_config(path, trust_remote_code=server_args.trust_remote_code).to_dict()
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot read it"
        raise DraftConfigError("path", f"cannot read a config from {path!r}: {e}", what) from None


def load_draft_config(server_args, target_hf_config: Any = None) -> DraftConfig:
    """Parse and validate the draft checkpoint against the target (config and, when local and not
    dummy-loaded, the weight shapes)."""
    if target_hf_config is None:
        target_hf_config = _read_config(server_args.model_path, server_args.model_path, server_args)
    target = target_shape_from_config(target_hf_config)
    path = server_args.speculative_draft_model_path
    what = f"draft {path}"
    draft_cfg = _read_config(path, what, server_args)
    try:
        cfg = parse_draft_config(draft_cfg, target, server_args.speculative_num_draft_tokens)
    except DraftConfigError as e:
        raise DraftConfigError(e.field, str(e).split(": ", 2)[-1], what) from None
    dummy = (server_args.speculative_draft_load_format or server_args.load_format) == "dummy"
    if os.path.isdir(path) and not dummy:
        check_draft_weights(path, cfg)
    return cfg


def _resolve_draft_backend(server_args) -> str:
    on_cpu = server_args.device == "cpu"
    allowed = CPU_DRAFT_BACKENDS if on_cpu else GPU_DRAFT_BACKENDS
    backend = server_args.speculative_draft_attention_backend
    if backend is None:
        # triton on a GPU: the draft backend measured on Hopper (BENCHMARKS.md).  fa4, the model
        # card's recipe, is accepted but has not run here (its wheels exceed the GPU machine's carry).
        backend = "torch_native" if on_cpu else "triton"
    if backend not in allowed:
        raise DFlashArgError(
            f"DFLASH (sglang-dflash): --speculative-draft-attention-backend {backend!r} is not supported "
            f"on device {server_args.device!r}; choose one of {', '.join(allowed)}"
        )
    if backend == "fa4" and importlib.util.find_spec("flash_attn") is None:
        raise DFlashArgError(
            "DFLASH (sglang-dflash): --speculative-draft-attention-backend fa4 needs flash-attn-4 installed "
            "(pip install flash-attn-4); or pass triton")
    return backend


def handle_dflash_server_args(server_args) -> None:
    """Replaces SGLang's ``_handle_dflash``: same scheduler accounting, our checks and defaults."""
    device = server_args.device or "cuda"
    if not (device.startswith("cuda") or device == "cpu"):
        raise DFlashArgError(f"DFLASH (sglang-dflash) runs on cuda or cpu, not on device {device!r}")
    if server_args.pp_size != 1:
        raise DFlashArgError("DFLASH (sglang-dflash) needs --pp-size 1")
    if server_args.enable_dp_attention:
        raise DFlashArgError("DFLASH (sglang-dflash) does not support --enable-dp-attention")
    if server_args.speculative_draft_model_path is None:
        raise DFlashArgError("DFLASH needs --speculative-draft-model-path (a DFlash draft checkpoint)")
    if server_args.speculative_draft_window_size is not None:
        raise DFlashArgError("DFLASH (sglang-dflash) does not support --speculative-draft-window-size")

    block = server_args.speculative_dflash_block_size
    if block is not None:
        if server_args.speculative_num_draft_tokens not in (None, block):
            raise DFlashArgError(
                "--speculative-num-draft-tokens and --speculative-dflash-block-size differ "
                f"({server_args.speculative_num_draft_tokens} vs {block}); DFLASH uses one block size"
            )
        server_args.speculative_num_draft_tokens = block
    # EAGLE-style fields still size generic scheduler buffers: a DFlash block is one step of width B,
    # one chain.  Another value asks for something DFLASH does not do (several draft steps, a tree).
    for name in ("speculative_num_steps", "speculative_eagle_topk"):
        if getattr(server_args, name) not in (None, 1):
            raise DFlashArgError(
                f"DFLASH (sglang-dflash) drafts one block of --speculative-num-draft-tokens tokens as a single "
                f"chain in one step: --{name.replace('_', '-')} {getattr(server_args, name)} does not apply "
                "(leave it out or pass 1)")
        setattr(server_args, name, 1)

    cfg = load_draft_config(server_args)
    server_args.speculative_num_draft_tokens = cfg.block_size
    server_args.speculative_draft_attention_backend = _resolve_draft_backend(server_args)

    if device == "cpu" and not server_args.disable_overlap_schedule and os.environ.get(CPU_OVERLAP_ENV) != "1":
        # As SGLang does for its own speculative algorithms on a CPU: its spec-v2 overlap relay
        # (FutureMap) calls record_stream on CPU tensors, which torch refuses, and a CPU has no
        # device to overlap with.  The CPU tests set the env var, with the CPU environment's fix
        # scripts/cpu_env/06-spec-overlap-on-cpu.patch, to run the overlap bookkeeping there.
        server_args.disable_overlap_schedule = True
        logger.warning("DFLASH (sglang-dflash) on CPU: overlap scheduling is off (SGLang has no speculative "
                       "overlap on CPU)")
    if server_args.max_running_requests is None:
        server_args.max_running_requests = 48
    if server_args.min_free_slots_delay is None:
        # SGLang holds new prefills under DFLASH until 2-4 request slots are free, because its own
        # worker runs a separate draft prefill per admission.  Ours projects the prefill's target
        # features into the draft's KV in the same step (no draft forward), so an admission costs
        # what it costs in plain decoding, and the hold only left slots idle: on 2 H200s at TP2,
        # 3 of a burst of 32 requests started ~1 s after the other 29 (BENCHMARKS.md, session 6).
        server_args.min_free_slots_delay = 1  # SGLang's value for "off"; a user's value is kept
    if server_args.enable_mixed_chunk:
        server_args.enable_mixed_chunk = False
        logger.info("DFLASH disables mixed chunked prefill")
    logger.info(
        "DFLASH (sglang-dflash): block %d, %d draft layers, target layers %s, mask id %d, draft backend %s, "
        "%s scheduler",
        cfg.block_size, cfg.num_layers, list(cfg.target_layer_ids), cfg.mask_token_id,
        server_args.speculative_draft_attention_backend,
        "non-overlapped" if server_args.disable_overlap_schedule else "overlap",
    )
