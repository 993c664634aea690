"""GPU-test scaffolding (never part of the product): float32 runs of SGLang on a GPU.

SGLang's CUDA norm/activation kernels (sgl_kernel) have no float32 instantiation, so a float32
server dies at CUDA-graph capture.  With SGLANG_DFLASH_TEST_NATIVE_OPS=1 (and this directory on
PYTHONPATH) every SGLang "multi-platform" op uses its plain-PyTorch forward instead, in every
process: attention (triton), KV cache, CUDA graphs and our worker still run as in production.
"""
import os

if os.environ.get("SGLANG_DFLASH_TEST_NATIVE_OPS") == "1":
    from sglang.srt.layers.utils.multi_platform import MultiPlatformOp

    MultiPlatformOp.dispatch_forward = lambda self: self.forward_native
