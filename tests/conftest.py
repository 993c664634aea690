import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
sys.path.insert(0, os.path.dirname(__file__))

from helpers import cpu_engine_env, interrupt_on_sigterm  # noqa: E402

if not HAS_CUDA:
    for key, value in cpu_engine_env().items():
        os.environ.setdefault(key, value)

interrupt_on_sigterm()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine: see BENCHMARKS.md)")
    skip_cpu = pytest.mark.skip(reason="CPU-server test (the GPU machine runs the gpu-marked tests)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if HAS_CUDA and "slow" in item.keywords and "gpu" not in item.keywords:
            item.add_marker(skip_cpu)
