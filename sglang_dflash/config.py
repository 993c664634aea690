"""DFlash draft configuration: parsing and validation of the z-lab checkpoint format.

Pure Python (no SGLang, no torch): the same checks run in the launcher process, before any model
is built, and again inside the worker.  Every error names the offending field.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

SLIDING = "sliding_attention"
FULL = "full_attention"
MIN_BLOCK_SIZE = 2
MAX_BLOCK_SIZE = 64


class DraftConfigError(ValueError):
    """A DFlash draft checkpoint that cannot serve the given target."""

    def __init__(self, field: str, problem: str, source: str = "draft config") -> None:
        self.field = field
        super().__init__(f"DFLASH {source}: field '{field}': {problem}")


@dataclass(frozen=True)
class TargetShape:
    """What the draft must agree with, read from the target's (text) config."""

    hidden_size: int
    num_layers: int
    vocab_size: int


@dataclass(frozen=True)
class DraftConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position: int
    block_size: int
    target_layer_ids: tuple[int, ...]
    mask_token_id: int
    layer_types: tuple[str, ...]
    sliding_window: Optional[int]
    # Per layer: True = causal attention inside the block, False = bidirectional.
    layer_causal: tuple[bool, ...]

    @property
    def num_features(self) -> int:
        return len(self.target_layer_ids)


def default_target_layer_ids(num_draft_layers: int, num_target_layers: int) -> list[int]:
    """The z-lab rule when a checkpoint names no layers: one draft layer reads the middle target
    layer; N layers read N ids spread evenly from layer 1 to layer L-3, rounded half up."""
    if num_draft_layers == 1:
        return [num_target_layers // 2]
    first, last = 1, num_target_layers - 3
    step = (last - first) / (num_draft_layers - 1)
    return [int(first + i * step + 0.5) for i in range(num_draft_layers)]


def _as_dict(cfg: Any) -> dict:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return dict(vars(cfg))


def target_shape_from_config(target_cfg: Any) -> TargetShape:
    """Accepts a text config or a multimodal one carrying ``text_config`` (Gemma-4's checkpoint form)."""
    cfg = _as_dict(target_cfg)
    text = cfg.get("text_config")
    if text is not None:
        cfg = _as_dict(text)
    for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if not isinstance(cfg.get(key), int):
            raise DraftConfigError(key, f"missing from the target config (got {cfg.get(key)!r})", "target config")
    return TargetShape(cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"])


def _int(cfg: Mapping, key: str, *, minimum: int = 1) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DraftConfigError(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise DraftConfigError(key, f"must be >= {minimum}, got {value}")
    return value


def _rope_theta(cfg: Mapping) -> float:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if "rope_type" in params and params["rope_type"] not in ("default", None):
        raise DraftConfigError("rope_parameters.rope_type", f"only 'default' RoPE is supported, got {params['rope_type']!r}")
    return float(theta)


def parse_draft_config(
    draft_cfg: Any,
    target: Optional[TargetShape],
    block_size_override: Optional[int] = None,
) -> DraftConfig:
    """Validate a draft config against its target; ``block_size_override`` is the CLI's
    ``--speculative-num-draft-tokens`` (it wins over the checkpoint's training block size).
    With ``target=None`` (inside the model class) only the draft's own fields are checked."""
    cfg = _as_dict(draft_cfg)
    dflash = cfg.get("dflash_config") or {}
    if not isinstance(dflash, Mapping):
        raise DraftConfigError("dflash_config", f"must be an object, got {type(dflash).__name__}")

    hidden = _int(cfg, "hidden_size")
    if target is not None and hidden != target.hidden_size:
        raise DraftConfigError(
            "hidden_size", f"draft hidden size {hidden} differs from the target's {target.hidden_size}"
        )
    if target is not None:
        # No embedding or LM head of its own, but trained against one target: its vocabulary and depth.
        for key, theirs, what in (("vocab_size", target.vocab_size, "vocabulary size"),
                                  ("num_target_layers", target.num_layers, "target layer count")):
            if cfg.get(key) is not None and cfg[key] != theirs:
                raise DraftConfigError(
                    key, f"draft {what} {cfg[key]!r} differs from the target's {theirs}: a draft for another target?")
    num_layers = _int(cfg, "num_hidden_layers")
    num_heads = _int(cfg, "num_attention_heads")
    num_kv_heads = _int(cfg, "num_key_value_heads") if "num_key_value_heads" in cfg else num_heads
    if num_heads % num_kv_heads:
        raise DraftConfigError("num_key_value_heads", f"{num_kv_heads} does not divide num_attention_heads {num_heads}")
    head_dim = _int(cfg, "head_dim") if cfg.get("head_dim") is not None else hidden // num_heads

    if block_size_override is not None:
        block_size, block_field = block_size_override, "speculative_num_draft_tokens"
    elif "block_size" in dflash:
        block_size, block_field = dflash["block_size"], "dflash_config.block_size"
    elif "block_size" in cfg:
        block_size, block_field = cfg["block_size"], "block_size"
    else:
        raise DraftConfigError("block_size", "absent (top level and dflash_config) and no --speculative-num-draft-tokens given")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise DraftConfigError(block_field, f"block size must be an integer in [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}], got {block_size!r}")

    num_target_layers = target.num_layers if target is not None else cfg.get("num_target_layers")
    ids = dflash.get("target_layer_ids")
    if ids is None:
        if not isinstance(num_target_layers, int):
            raise DraftConfigError("dflash_config.target_layer_ids", "absent, and the target's layer count is unknown")
        ids = default_target_layer_ids(num_layers, num_target_layers)
    if not isinstance(ids, Sequence) or isinstance(ids, str) or not ids:
        raise DraftConfigError("dflash_config.target_layer_ids", f"must be a non-empty list of layer ids, got {ids!r}")
    for i, lid in enumerate(ids):
        if isinstance(lid, bool) or not isinstance(lid, int) or lid < 0:
            raise DraftConfigError("dflash_config.target_layer_ids", f"entry {i} = {lid!r} is not a layer id")
        if target is not None and lid >= target.num_layers:
            raise DraftConfigError(
                "dflash_config.target_layer_ids",
                f"entry {i} = {lid} is outside the target's layers [0, {target.num_layers})",
            )
    if len(set(ids)) != len(ids):
        raise DraftConfigError("dflash_config.target_layer_ids", f"repeats a layer id: {list(ids)}")

    mask_id = dflash.get("mask_token_id", cfg.get("mask_token_id"))
    if isinstance(mask_id, bool) or not isinstance(mask_id, int):
        raise DraftConfigError("dflash_config.mask_token_id", f"must be an integer token id, got {mask_id!r}")
    if mask_id < 0 or (target is not None and mask_id >= target.vocab_size):
        raise DraftConfigError(
            "dflash_config.mask_token_id", f"{mask_id} is outside the target vocabulary [0, {target.vocab_size if target else '?'})"
        )

    layer_types = cfg.get("layer_types") or [FULL] * num_layers
    if len(layer_types) != num_layers or any(t not in (SLIDING, FULL) for t in layer_types):
        raise DraftConfigError(
            "layer_types", f"must list {num_layers} entries of '{SLIDING}'/'{FULL}', got {list(layer_types)!r}"
        )
    window = cfg.get("sliding_window")
    if SLIDING in layer_types:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise DraftConfigError("sliding_window", f"sliding layers need a positive window, got {window!r}")
    else:
        window = None

    # Sliding layers are causal with their window and full layers bidirectional (what the
    # checkpoints were trained with); an explicit flag in the checkpoint overrides both.
    explicit = dflash.get("causal", cfg.get("is_causal"))
    if explicit is not None and not isinstance(explicit, bool):
        raise DraftConfigError("dflash_config.causal", f"must be true or false, got {explicit!r}")
    causal = tuple(explicit if explicit is not None else t == SLIDING for t in layer_types)

    return DraftConfig(
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=_int(cfg, "intermediate_size"),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(cfg),
        max_position=int(cfg.get("max_position_embeddings") or 32768),
        block_size=block_size,
        target_layer_ids=tuple(ids),
        mask_token_id=mask_id,
        layer_types=tuple(layer_types),
        sliding_window=window,
        layer_causal=causal,
    )


def expected_weight_shapes(cfg: DraftConfig) -> dict[str, tuple[int, ...]]:
    h, d = cfg.hidden_size, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "fc.weight": (h, cfg.num_features * h),
        "hidden_norm.weight": (h,),
        "norm.weight": (h,),
    }
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (cfg.num_heads * d, h),
            p + "self_attn.k_proj.weight": (cfg.num_kv_heads * d, h),
            p + "self_attn.v_proj.weight": (cfg.num_kv_heads * d, h),
            p + "self_attn.o_proj.weight": (h, cfg.num_heads * d),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.k_norm.weight": (d,),
            p + "mlp.gate_proj.weight": (cfg.intermediate_size, h),
            p + "mlp.up_proj.weight": (cfg.intermediate_size, h),
            p + "mlp.down_proj.weight": (h, cfg.intermediate_size),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
    return shapes


def _safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Read tensor shapes from a safetensors header without loading any data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def check_draft_weights(draft_dir: str, cfg: DraftConfig) -> None:
    """Every tensor the draft needs is present with its shape (fc must be [H, K*H])."""
    files = sorted(f for f in os.listdir(draft_dir) if f.endswith(".safetensors"))
    if not files:
        raise DraftConfigError("weights", f"no *.safetensors file in {draft_dir}", "draft checkpoint")
    found: dict[str, tuple[int, ...]] = {}
    for f in files:
        for name, shape in _safetensors_shapes(os.path.join(draft_dir, f)).items():
            found[name.removeprefix("model.")] = shape
    for name, shape in expected_weight_shapes(cfg).items():
        if name not in found:
            raise DraftConfigError(name, "tensor missing from the checkpoint", "draft checkpoint")
        if found[name] != shape:
            hint = f" (K={cfg.num_features} target layers x H={cfg.hidden_size})" if name == "fc.weight" else ""
            raise DraftConfigError(
                name, f"shape {list(found[name])} does not match the expected {list(shape)}{hint}", "draft checkpoint"
            )


def load_json_config(model_dir: str, what: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    if not os.path.isdir(model_dir):
        raise DraftConfigError("path", f"{model_dir!r} is not a directory", what)
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise DraftConfigError("config.json", f"cannot read {path}: {e.strerror}", what) from None
    except json.JSONDecodeError as e:
        raise DraftConfigError("config.json", f"{path} is not valid JSON: {e}", what) from None
