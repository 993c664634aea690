#!/bin/bash
# Run the test suite on a CPU machine: creates the environment if missing (scripts/setup_env.sh),
# builds the tiny models on first use (cached in .models/), starts real SGLang servers.
#   usage: scripts/test.sh [pytest args...]      e.g. scripts/test.sh -m "not slow"
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
. "$ROOT/.venv/bin/activate"
cd "$ROOT"
export SGLANG_USE_CPU_ENGINE=1 TORCHDYNAMO_DISABLE=1
exec python -m pytest -m "not gpu" --timeout 1800 -v -rs "$@" tests
