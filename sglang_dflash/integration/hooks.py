"""Every change sglang-dflash makes inside SGLang 0.5.17, registered in one place.

Applied at runtime through SGLang's plugin HookRegistry in every SGLang process; no SGLang file
on disk is edited.  patches/README.md lists the same hooks for reviewers.  With
``SGLANG_DFLASH_IMPL=builtin`` only the logging hook is installed and SGLang's own DFLASH runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os

import torch

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

import sglang_dflash

logger = logging.getLogger("sglang_dflash")

IMPL_ENV = "SGLANG_DFLASH_IMPL"
OURS, BUILTIN = "sglang-dflash", "builtin"


def active_impl() -> str:
    value = os.environ.get(IMPL_ENV, OURS).strip().lower()
    if value in ("builtin", "sglang"):
        return BUILTIN
    if value in ("", "ours", OURS, "sglang_dflash"):
        return OURS
    raise ValueError(f"{IMPL_ENV}={value!r}: expected '{OURS}' (default) or '{BUILTIN}'")


def _create_worker(original, self, server_args):
    """Hands the scheduler our worker class for DFLASH, and names the active implementation."""
    if not self.is_dflash():
        return original(self, server_args)
    if active_impl() == BUILTIN:
        cls = original(self, server_args)
        logger.info("DFLASH implementation: SGLang built-in (%s.%s), selected by %s=builtin",
                    cls.__module__, cls.__qualname__, IMPL_ENV)
        return cls
    from sglang_dflash.worker import DFlashWorker

    logger.info("DFLASH implementation: sglang-dflash %s (%s.%s)",
                sglang_dflash.__version__, DFlashWorker.__module__, DFlashWorker.__qualname__)
    return DFlashWorker


def _handle_dflash(server_args) -> None:
    from sglang_dflash.integration.server_args import fail_like_argparse, handle_dflash_server_args

    fail_like_argparse(handle_dflash_server_args)(server_args)


def _check_draft_path(server_args) -> None:
    """SGLang reads the draft config while resolving algorithm aliases, before ``_handle_dflash``:
    a local draft path that names no checkpoint fails here with our message, not a hub error."""
    if (server_args.speculative_algorithm or "").upper() != "DFLASH":
        return None
    from sglang_dflash.integration.server_args import check_local_draft_path, fail_like_argparse

    fail_like_argparse(lambda args: check_local_draft_path(args.speculative_draft_model_path))(server_args)
    return None


def _get_model_architecture(original, model_config):
    """The draft checkpoint's ``DFlashDraftModel`` architecture loads our draft model class."""
    cls, arch = original(model_config)
    if arch == "DFlashDraftModel":
        from sglang_dflash.draft_model import DFlashDraftModel

        return DFlashDraftModel, arch
    return cls, arch


def _resolve_aux_hidden_state(*, config, server_args, model_config, spec_algorithm, is_draft_worker) -> None:
    """Which target layers the target captures for the draft: decided by our config parser."""
    if not spec_algorithm.is_dflash() or is_draft_worker:
        return _ORIGINALS["aux"](config=config, server_args=server_args, model_config=model_config,
                                 spec_algorithm=spec_algorithm, is_draft_worker=is_draft_worker)
    from sglang_dflash.integration.server_args import load_draft_config

    draft = load_draft_config(server_args, model_config.hf_config)
    config.dflash_use_aux_hidden_state = True
    config.dflash_draft_num_layers = draft.num_layers
    config.dflash_target_layer_ids = list(draft.target_layer_ids)


def _validate_request(req, enable_overlap):
    from sglang_dflash.integration.requests import unsupported_reason

    return unsupported_reason(req)


def _torch_native_forward_extend(original, self, q, k, v, layer, forward_batch, save_kv_cache=True):
    """SGLang's torch_native backend reads a TARGET_VERIFY batch as a plain extend with no
    extend lengths.  A verify (or draft) block is an extend of ``draft_token_num`` tokens after
    ``seq_lens`` committed ones: present it that way for the duration of the call."""
    if not forward_batch.forward_mode.is_target_verify():
        return original(self, q, k, v, layer, forward_batch, save_kv_cache)
    fb = forward_batch
    saved = fb.seq_lens, fb.extend_prefix_lens, fb.extend_seq_lens
    width = int(fb.spec_info.draft_token_num)
    fb.extend_prefix_lens = fb.seq_lens
    fb.extend_seq_lens = torch.full_like(fb.seq_lens, width)
    fb.seq_lens = fb.seq_lens + width
    try:
        return original(self, q, k, v, layer, fb, save_kv_cache)
    finally:
        fb.seq_lens, fb.extend_prefix_lens, fb.extend_seq_lens = saved


BLOCK_ATTENTION_ENV = "SGLANG_DFLASH_BLOCK_ATTENTION"  # "sglang": keep SGLang's extend kernel (A/B runs)
WINDOW_TRANSLATE_ENV = "SGLANG_DFLASH_WINDOW_TRANSLATE"  # "sglang": keep SGLang's synced translation (A/B runs)
_TRITON = "sglang.srt.layers.attention.triton_backend"


@functools.cache
def _signature(fn) -> inspect.Signature:
    return inspect.signature(fn)


def mark_draft_backend(backend) -> None:
    """Marks the draft's attention backend: its block forwards are drafts, not verifies (below)."""
    backend.dflash_draft = True


def _block_attention(sglang_kernel, as_decode: bool, *args, **kwargs):
    """Stands in for the triton backend's ``extend_attention_fwd`` during a block forward: our
    split-KV kernel when the call is plain causal/bidirectional attention over KV slots (page size 1),
    SGLang's kernel for anything else (custom masks, sinks, scales, pages, MLA-style dims).

    ``as_decode``: the target's verify must reproduce SGLang's triton *decode*, token for token.
    That decode keeps ``min(seq_len, W)`` keys for a layer window W (``layer.sliding_window_size``,
    already the model's window minus one) where ``seq_len`` counts the token itself, i.e. keys
    at most W-1 positions back, one fewer than its extend kernel's mask (W back).  So a verify
    query sees W-1 positions back, exactly what plain decoding of that token would see."""
    a = _signature(sglang_kernel).bind(*args, **kwargs).arguments
    simple = (
        a.get("custom_mask") is None and a.get("sinks") is None and a.get("score_mod") is None
        and a.get("lse_extend") is None and not a.get("skip_prefix") and not a.get("skip_extend")
        and a.get("page_size", 1) == 1 and (a.get("xai_temperature_len") or -1) <= 0
        and a["k_scale"] == 1.0 and a["v_scale"] == 1.0 and isinstance(a["max_len_extend"], int)
        and a["max_len_extend"] <= 64 and a["q_extend"].shape[-1] == a["k_buffer"].shape[-1]
    )
    if not simple:
        return sglang_kernel(*args, **kwargs)
    from sglang_dflash.kernels.verify_attention import verify_attention

    q = a["q_extend"]
    window = a.get("sliding_window_size", -1)
    if as_decode and window > 0:
        window -= 1
    verify_attention(
        q, a["k_extend"], a["v_extend"], a["o_extend"], a["k_buffer"], a["v_buffer"], a["qo_indptr"],
        a["kv_indptr"], a["kv_indices"], bool(a["is_causal"]), a["max_len_extend"],
        a.get("sm_scale") or q.shape[-1] ** -0.5, a.get("logit_cap") or 0.0, window,
    )


def _triton_forward_extend(original, self, q, k, v, layer, forward_batch, *args, **kwargs):
    """A DFLASH block (target verify or draft forward) is a short fixed-width extend: route its
    attention to our split-KV kernel for the duration of the call."""
    from sglang.srt.speculative.dflash_info import DFlashVerifyInput

    if not (forward_batch.forward_mode.is_target_verify() and isinstance(forward_batch.spec_info, DFlashVerifyInput)):
        return original(self, q, k, v, layer, forward_batch, *args, **kwargs)
    sglang_kernel = self.extend_attention_fwd
    self.extend_attention_fwd = functools.partial(_block_attention, sglang_kernel,
                                                  not getattr(self, "dflash_draft", False))
    try:
        return original(self, q, k, v, layer, forward_batch, *args, **kwargs)
    finally:
        self.extend_attention_fwd = sglang_kernel


_PLANNING_VERIFY_GRAPH = [False]  # inside TritonAttnBackend._update_target_verify_buffers


def _target_verify_buffers(original, self, *args, **kwargs):
    """Marks the CUDA-graph buffer planning of a target verify, for ``_window_buffer``."""
    _PLANNING_VERIFY_GRAPH[0] = True
    try:
        return original(self, *args, **kwargs)
    finally:
        _PLANNING_VERIFY_GRAPH[0] = False


def _window_buffer(original, *args, **kwargs):
    """``update_sliding_window_buffer`` while a verify's graph buffers are planned: the window's
    full-to-SWA slot translation without the host sync of SGLang's ``indices[:device_count]``
    (``kv_cache.translate_window_in_place``).  Everything else goes to SGLang's function as is."""
    if not _PLANNING_VERIFY_GRAPH[0]:  # plain decode's planning and eager forwards: untouched, unparsed
        return original(*args, **kwargs)
    a = _signature(original).bind(*args, **kwargs)
    a.apply_defaults()
    a = a.arguments
    pool, indices = a["token_to_kv_pool"], a["window_kv_indices"]
    if indices is None or a["skip_full_to_swa_translation"] or not hasattr(pool, "translate_loc_from_full_to_swa"):
        return original(*args, **kwargs)
    out = original(**{**a, "skip_full_to_swa_translation": True})
    from sglang_dflash.kv_cache import translate_window_in_place

    bs, window = a["bs"], a["sliding_window_size"]
    translate_window_in_place(out[1], out[0][bs], bs * window, pool.translate_loc_from_full_to_swa)
    return out


def _update_finish_state(original, self, new_accepted_len: int = 1):
    """A verify step commits a run of tokens, and SGLang checks the run's finish conditions in a
    fixed order (length, then stop strings over the whole run, then stop tokens), while one-token
    decoding stops at the first token meeting any of them.  Where they can disagree -- the run
    reaches max_new_tokens, stop strings/regexes are set, or an abort is pending (SGLang then
    finishes the request with the whole run, past its length limit and stop tokens) -- replay the
    run one token at a time, exactly as plain decoding checks it; a pending abort applies only
    where the run itself does not finish the request first."""
    sp = self.sampling_params
    ids = self.output_ids
    abort = self.to_finish
    if new_accepted_len <= 1 or self.finished():
        return original(self, new_accepted_len)
    if self.grammar is not None:
        # The grammar has already consumed (and cut) the whole run: its state cannot be replayed
        # per token.  An abort still keeps the output within max_new_tokens.
        original(self, new_accepted_len)
        if abort is not None and len(ids) > sp.max_new_tokens:
            self.finished_len = sp.max_new_tokens
        return None
    if abort is None and len(ids) < sp.max_new_tokens and not sp.stop_strs and not sp.stop_regex_strs:
        return original(self, new_accepted_len)
    start = len(ids) - new_accepted_len
    run = ids[start:]
    del ids[start:]
    self.to_finish = None
    try:
        for token in run:
            ids.append(token)
            original(self, 1)
            if self.finished():
                if self.finished_len is None:  # finished on text decoded before this step
                    self.finished_len = len(ids)
                break
    finally:
        ids.extend(run[len(ids) - start:])
        if abort is not None and not self.finished():
            self.to_finish = abort
            original(self, 0)


def _req_to_token_extra_len(original, server_args) -> int:
    """Headroom of each request's row of SGLang's token table past the context length.  Under the
    overlap scheduler a DFLASH request's slots reach its lagged committed length plus two blocks
    (sglang_dflash/kv_cache.py); SGLang's headroom of 4 + one block would let the reservation of a
    request near the context limit run past its row."""
    extra = original(server_args)
    if (server_args.speculative_algorithm or "").upper() == "DFLASH" and not server_args.disable_overlap_schedule:
        extra = max(extra, 4 + 2 * server_args.speculative_num_draft_tokens)
    return extra


_ORIGINALS: dict = {}
_AUX = "sglang.srt.model_executor.model_runner_components.spec_aux_hidden_state._resolve_dflash_aux_hidden_state"


def install() -> None:
    try:
        impl = active_impl()
    except ValueError as e:
        # SGLang's plugin loader only logs exceptions; fail the launch itself instead.
        def refuse(server_args, error=e):
            raise error

        HookRegistry.register("sglang.srt.arg_groups.speculative_hook._handle_dflash", refuse, HookType.REPLACE)
        return
    HookRegistry.register("sglang.srt.speculative.spec_info.SpeculativeAlgorithm.create_worker",
                          _create_worker, HookType.AROUND)
    if impl == BUILTIN:
        return
    import pkgutil

    _ORIGINALS["aux"] = pkgutil.resolve_name(_AUX)
    HookRegistry.register("sglang.srt.arg_groups.speculative_hook.handle_speculative_decoding", _check_draft_path,
                          HookType.BEFORE)
    HookRegistry.register("sglang.srt.arg_groups.speculative_hook._handle_dflash", _handle_dflash, HookType.REPLACE)
    HookRegistry.register(_AUX, _resolve_aux_hidden_state, HookType.REPLACE)
    HookRegistry.register("sglang.srt.model_loader.loader.get_model_architecture",
                          _get_model_architecture, HookType.AROUND)
    HookRegistry.register("sglang.srt.managers.scheduler.validate_dflash_request", _validate_request, HookType.REPLACE)
    HookRegistry.register("sglang.srt.mem_cache.allocation_sizing.get_req_to_token_extra_context_len",
                          _req_to_token_extra_len, HookType.AROUND)
    HookRegistry.register("sglang.srt.managers.schedule_batch.Req.update_finish_state", _update_finish_state,
                          HookType.AROUND)
    HookRegistry.register("sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.forward_extend",
                          _torch_native_forward_extend, HookType.AROUND)
    if os.environ.get(BLOCK_ATTENTION_ENV, "ours").strip().lower() != "sglang":
        HookRegistry.register("sglang.srt.layers.attention.triton_backend.TritonAttnBackend.forward_extend",
                              _triton_forward_extend, HookType.AROUND)
    if os.environ.get(WINDOW_TRANSLATE_ENV, "ours").strip().lower() != "sglang":
        HookRegistry.register(f"{_TRITON}.TritonAttnBackend._update_target_verify_buffers", _target_verify_buffers,
                              HookType.AROUND)
        HookRegistry.register(f"{_TRITON}.update_sliding_window_buffer", _window_buffer, HookType.AROUND)
