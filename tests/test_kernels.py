"""The Triton kernels pass their reference checks (tests/kernel_cases.py): on a CPU under Triton's
interpreter (in CI), on the GPU machine compiled."""

import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def test_kernels_match_references():
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(HERE, "kernel_cases.py")],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-2000:]
