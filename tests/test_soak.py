"""A short run of scripts/soak.py: the random mixed workload (lengths, stops, streams, disconnects,
aborts, sampled, invalid and over-long requests, retraction under a small KV pool) against the CPU
DFLASH server, every greedy answer equal to plain decoding, nothing crashed or leaked."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, server_env

pytestmark = pytest.mark.slow


def test_short_soak(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "soak.py"), "--duration", "75", "--concurrency", "4",
           "--progress", "15", "--seed", "7", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=server_env(), timeout=1500)
    report = json.loads((tmp_path / "soak_report.json").read_text())
    summary = {k: report.get(k) for k in ("requests", "served", "errors", "mismatches", "crashes", "leaked_kv_tokens",
                                          "aborted", "disconnected", "refused", "server_log")}
    assert proc.returncode == 0 and report["ok"], (summary, report["mismatch_examples"], report["error_examples"],
                                                   proc.stderr[-3000:])
    assert report["served"] >= 5 and report["mismatches"] == 0 and report["crashes"] == 0
    assert report["leaked_kv_tokens"] == 0 and report["server_log"]["leak_errors"] == 0
