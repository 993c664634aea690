"""GPU-machine diagnostics: plugin discovery and how this SGLang/transformers reads the tiny Gemma-4."""
import json, logging, os, sys
logging.basicConfig(level=logging.INFO)
from importlib.metadata import entry_points, distribution
print("entry points:", [(e.name, e.value) for e in entry_points(group="sglang.srt.plugins")])
try:
    d = distribution("sglang-dflash"); print("dist:", d.metadata["Name"], d.version, d._path if hasattr(d, "_path") else "")
except Exception as e:
    print("no dist:", e)
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
print("worker:", SpeculativeAlgorithm.from_string("DFLASH").create_worker(None))
root = sys.argv[1]
from transformers import AutoConfig
cfg = AutoConfig.from_pretrained(os.path.join(root, "gemma4"))
for k in ["num_key_value_heads", "num_global_key_value_heads", "head_dim", "global_head_dim", "attention_k_eq_v", "layer_types"]:
    print(k, getattr(cfg, k, None))
from safetensors import safe_open
with safe_open(os.path.join(root, "gemma4", "model.safetensors"), "pt") as f:
    for k in f.keys():
        if ".layers.5." in k or ".layers.0.self_attn" in k:
            print(k, tuple(f.get_slice(k).get_shape()))
