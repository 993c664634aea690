import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:  # SGLang's CPU engine; torch.compile is off for the 2-core machine
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    # DFLASH's default on a GPU is the overlap scheduler: the CPU tests run it too (tests/helpers.py).
    os.environ.setdefault("SGLANG_DFLASH_TEST_CPU_OVERLAP", "1")
sys.path.insert(0, os.path.dirname(__file__))

from helpers import interrupt_on_sigterm  # noqa: E402

interrupt_on_sigterm()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine: see BENCHMARKS.md)")
    skip_cpu = pytest.mark.skip(reason="CPU-server test (the GPU machine runs the gpu-marked tests)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if HAS_CUDA and "slow" in item.keywords and "gpu" not in item.keywords:
            item.add_marker(skip_cpu)
