#!/bin/bash
# Every GPU-machine check in one call, spread over the visible GPUs; logs and JSON under $OUT.
#   GPU 0: the side-by-side benchmark (plain, SGLang's built-in DFLASH, ours with controlled
#          acceptance 8.59) at gemma-4-31B-it shapes, concurrency 1, 8, 32.
#   others: the GPU tests (tiny pairs: lossless with CUDA graphs under both schedulers, partial
#          verify, sampling law, kernels) and the soak at gemma-4-31B-it shapes, 32 concurrent.
# With one GPU everything runs there one after the other (longer than one 10-minute call).
#   usage: . .devbundle/setup.sh && pip install -e . && bash scripts/gpu_all.sh [bench_seconds]
set -u
OUT=${OUT:-/tmp/gpu_all}
BENCH_S=${1:-560}
mkdir -p "$OUT"
NGPU=$(nvidia-smi -L | wc -l)
nvidia-smi > "$OUT/nvidia-smi.txt"

bench() {
  CUDA_VISIBLE_DEVICES=0 timeout "$BENCH_S" python scripts/bench_gemma.py --configs .devbundle/configs \
    --concurrency 1,8,32 --new-tokens 384 --modes plain,ours-controlled,builtin --accept 8.59 --out "$OUT" \
    > "$OUT/bench.log" 2>&1
  echo "bench rc $?" >> "$OUT/bench.log"
}
tests() {  # $1: GPU, $2: pytest -k expression, $3: log name, $4: seconds
  CUDA_VISIBLE_DEVICES=$1 timeout "$4" python -m pytest -q -p no:cacheprovider -rA tests/test_gpu.py tests/test_kernels.py \
    -k "$2" > "$OUT/$3.log" 2>&1
  echo "$3 rc $?" >> "$OUT/$3.log"
}
soak() {  # $1: GPU, $2: workload seconds, $3: seconds in all
  CUDA_VISIBLE_DEVICES=$1 timeout "$3" python scripts/soak.py --device cuda --configs .devbundle/configs \
    --concurrency 32 --duration "$2" --context-length 2048 --out "$OUT/soak" > "$OUT/soak.log" 2>&1
  echo "soak rc $?" >> "$OUT/soak.log"
}

if [ "$NGPU" -ge 4 ]; then
  soak 1 150 "$BENCH_S" &
  tests 2 "equals_plain" tests_lossless "$BENCH_S" &
  tests 3 "not equals_plain" tests_other "$BENCH_S" &
  bench
elif [ "$NGPU" -ge 2 ]; then
  (tests 1 "" tests_all 330; soak 1 60 $((BENCH_S - 340))) &
  bench
else
  bench; tests 0 "" tests_all 600; soak 0 120 600
fi
wait
tail -n 3 "$OUT"/*.log
