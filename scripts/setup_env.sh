#!/bin/bash
# Create (or reuse) the CPU development environment: SGLang 0.5.17 + this project, on a machine
# with no GPU and only the package registries.  Used by scripts/test.sh, scripts/demo.sh and CI.
#   usage: scripts/setup_env.sh [VENV]         (default: .venv in the project root)
# What it installs, and why:
#   - torch 2.13.0 (CPU build; pinned through PIP_CONSTRAINT, else any dependency drags in a
#     multi-GB CUDA torch),
#   - sglang==0.5.17 with --no-deps plus the locked runtime dependencies (scripts/cpu_env/),
#   - an import-only stand-in for SGLang's CUDA kernel package (scripts/cpu_env/sgl_kernel_cpu_shim)
#     and one for torchvision (none on PyPI loads beside the CPU torch; transformers' Gemma-4
#     processor imports it unconditionally),
#   - five small textual fixes to the installed SGLang that only the CPU dev environment needs
#     (scripts/cpu_env/0*.patch: torchvision-less import, text-only Gemma-4 on CPU, torch_native
#     with a hybrid sliding-window pool, xgrammar on CPU, the speculative overlap relay on CPU so
#     that the tests run DFLASH's overlap scheduling there).  None of this is part of the product:
#     what the product changes inside SGLang is in patches/ and applied at runtime by the plugin.
#   - this project, editable, with its test extras.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$ROOT/.venv}
ENV_DIR=$ROOT/scripts/cpu_env
STAMP=$VENV/.sglang_dflash_env_ok
apply_fixes() {  # each fix once: an environment made before a fix was added gets it on the next run
  local sp p
  sp=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for p in "$ENV_DIR"/0*.patch; do
    if patch -s -f -p1 -d "$sp" -R --dry-run < "$p" >/dev/null 2>&1; then continue; fi
    patch -s -p1 -d "$sp" --no-backup-if-mismatch < "$p"; echo "[setup_env] applied $(basename "$p")"
  done
}
if [ -f "$STAMP" ]; then
  . "$VENV/bin/activate"
  apply_fixes
  pip install -q --no-deps --no-build-isolation -e "$ROOT" >/dev/null
  exit 0
fi
T0=$(date +%s)
echo "[setup_env] creating $VENV (about 2 minutes)"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
CONS=$(mktemp /tmp/sglang-dflash-constraints.XXXX.txt); printf "torch==2.13.0\n" > "$CONS"
export PIP_CONSTRAINT="$CONS" PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
pip install -q --no-deps sglang==0.5.17
pip install -q -r "$ENV_DIR/requirements-cpu.txt"
pip install -q pytest==9.2.0 pytest-timeout scipy
for stub in sgl_kernel_cpu_shim torchvision_import_stub; do   # built from a temp copy: keeps the tree clean
  TMP=$(mktemp -d); cp -r "$ENV_DIR/$stub/." "$TMP/"; pip install -q --no-build-isolation "$TMP"; rm -rf "$TMP"
done
apply_fixes
pip install -q --no-deps --no-build-isolation -e "$ROOT"
rm -f "$CONS"
SGLANG_USE_CPU_ENGINE=1 python -c 'import torch, sglang, sglang_dflash; print("[setup_env] torch", torch.__version__, "sglang", sglang.__version__, "sglang_dflash", sglang_dflash.__version__)'
touch "$STAMP"
echo "[setup_env] done in $(( $(date +%s) - T0 )) s"
