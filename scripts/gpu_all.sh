#!/bin/bash
# Every GPU-machine check in one go, spread over the visible GPUs; logs and JSON under $GPU_ALL_DIR
# (default /tmp/gpu_all), DONE written there at the end.  Long (about 17 minutes on 4 GPUs), so on
# the device machine it runs detached and later calls collect it:
#   . .devbundle/setup.sh && pip install -e . && setsid nohup bash scripts/gpu_all.sh > /tmp/gpu_all.out 2>&1 &
# With 4 GPUs:
#   GPU 0: the side-by-side benchmark at gemma-4-31B-it shapes, concurrency 1, 8, 32: plain, ours
#          (controlled acceptance 8.59; overlap scheduler), ours non-overlapped, SGLang's built-in
#          DFLASH, ours with the load-adaptive verify width.
#   GPU 1: the tiny-pair lossless tests with CUDA graphs (both schedulers, partial verify), then the
#          soak (gemma-4-31B-it layer shapes, 12 layers, float32, 32 concurrent), then the kernels.
#   GPU 2+3: tensor parallelism: the tiny TP2 tests, the sampling-law server test (GPU 2), then the
#          benchmark with --tp 2.
# With 2 GPUs: the TP2 tests and the TP2 benchmark (on H200s then issue 5's attention sweep and
# c32 A/B, and the Gemma-4 TP1 lossless tests, one GPU each).  With 1: Gemma-4 lossless tests, the
# c1/c32 benchmark (plain, built-in, ours with and without overlap, ours with the adaptive width),
# the kernels, the sweep and its c32 run (FULL=1: then the soak and the sampling law), in that order.
# SKIP_TESTS=1 leaves out the one-GPU tests (BENCH_MODES then names +auto itself); SERVER_ARGS is
# appended to every benchmark server.  One 80 GB card gets the settings that fit c32 there (radix cache
# on, 128-token prompts and outputs, 0.93 static: BENCHMARKS.md, session 9).
set -u
D=${GPU_ALL_DIR:-/tmp/gpu_all}
BENCH_S=${BENCH_S:-1000}
rm -rf "$D"; mkdir -p "$D"
NGPU=$(nvidia-smi -L | wc -l)
BIG_CARD=$([ "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0)" -ge 100000 ] && echo 1)
nvidia-smi > "$D/nvidia-smi.txt"
export PYTHONUNBUFFERED=1
# Build the tiny models once, before parallel jobs would race on the same directory.
python -c "import sys; sys.path.insert(0, 'tests'); from markov_model import markov_model; markov_model(checks=False)" \
  > "$D/models.log" 2>&1

bench() {  # $1: GPUs, $2: out dir, $3: port, $4: modes, $5: extra args
  mkdir -p "$2"
  CUDA_VISIBLE_DEVICES=$1 timeout "$BENCH_S" python scripts/bench_gemma.py --configs .devbundle/configs \
    --concurrency "${CONCURRENCY:-1,8,32}" --new-tokens "${NEW_TOKENS:-256}" --modes "$4" --accept 8.59 --port "$3" --out "$2" \
    --server-args="${SERVER_ARGS:-}" ${FIT_ARGS:-} ${5:-} > "$2/bench.log" 2>&1
  echo "bench rc $?" >> "$2/bench.log"
}
tests() {  # $1: GPUs, $2: pytest -k expression, $3: log name, $4: seconds (server logs under $D/$3/)
  CUDA_VISIBLE_DEVICES=$1 timeout "$4" python -m pytest -q -p no:cacheprovider -rA --basetemp "$D/$3" \
    tests/test_gpu.py tests/test_kernels.py -k "$2" > "$D/$3.log" 2>&1
  echo "$3 rc $?" >> "$D/$3.log"
}
soak() {  # $1: GPU, $2: workload seconds, $3: seconds in all
  CUDA_VISIBLE_DEVICES=$1 timeout "$3" python scripts/soak.py --device cuda --configs .devbundle/configs --layers 12 \
    --dtype float32 --concurrency 32 --duration "$2" --context-length 2048 --out "$D/soak" > "$D/soak.log" 2>&1
  echo "soak rc $?" >> "$D/soak.log"
}
tuned_c32() {  # $1: GPU, $2: modes, $3 (optional): extra benchmark args. Issue 5: sweep the
  # block-attention launches at c32 shapes, then the given modes with the sweep's winners
  # (SGLANG_DFLASH_ATTN_LAUNCHES), one card, concurrency 32
  mkdir -p "$D/sweep"
  CUDA_VISIBLE_DEVICES=$1 timeout 600 python scripts/bench_block_attention.py --sweep --batch 32 --prefix 512 \
    --kinds target-sliding,target-global --budget-s "${SWEEP_S:-240}" --out "$D/sweep" > "$D/sweep/sweep.log" 2>&1
  echo "sweep rc $?" >> "$D/sweep/sweep.log"
  [ -s "$D/sweep/block_attention_launches.json" ] || echo '{}' > "$D/sweep/block_attention_launches.json"
  CONCURRENCY=32 bench "$1" "$D/bench_tuned" 3000$1 "$2" "--attn-launches $D/sweep/block_attention_launches.json ${3:-}"
}
MODES=plain,ours-controlled,ours-controlled+nooverlap,builtin,ours-controlled+auto

if [ "$NGPU" -ge 4 ]; then
  bench 0 "$D/bench_all" 30000 "$MODES" "--py-spy" &
  (tests 1 "equals_plain and not tp2" tests_lossless 720; soak 1 150 540; tests 1 "kernel" tests_kernels 120) &
  (tests 2,3 "tp2" tests_tp2 600; tests 2 "sampling" tests_sampling 420
   bench 2,3 "$D/bench_tp2" 30010 plain,ours-controlled,builtin "--tp 2") &
elif [ "$NGPU" -ge 2 ]; then  # a 2-GPU machine is for tensor parallelism (issue 8) ...
  if [ -z "${SKIP_TP2:-}" ]; then
    tests 0,1 "tp2" tests_tp2 600
    bench 0,1 "$D/bench_tp2" 30010 plain,ours-controlled,builtin "--tp 2"
  fi
  # ... then, where one card holds the 31B model with a c32 KV pool (H200), issue 5 on one GPU
  # each: the attention sweep and its A/B (GPU 0); Gemma-4 lossless at TP1 with hook 9 and the
  # kernels (GPU 1).  About 14 + 15 minutes in all: SKIP_TP2=1 or SKIP_C32=1 runs one half.
  if [ -z "${SKIP_C32:-}" ] && [ -n "$BIG_CARD" ]; then
    tuned_c32 0 plain,ours-controlled,ours-controlled+tuned &
    (tests 1 "gemma4 and cuda_graphs and not tp2" tests_gemma4 420; tests 1 "kernel" tests_kernels 120) &
  fi
else  # issue 5 on one card: Gemma-4 lossless under both schedulers (graphed narrow verifies
  # included); plain, the built-in, ours with and without overlap, and (where the narrow verifies
  # passed) ours with the load-adaptive width, at c1 and c32; the kernels; the attention sweep and
  # its c32 run against this run's plain continuations; FULL=1 adds the soak and the sampling law
  if [ -z "$BIG_CARD" ]; then
    # 80 GB: with the radix cache off SGLang sizes the sliding-window pool for a full window per request
    SERVER_ARGS=${SERVER_ARGS:---mem-fraction-static 0.93 --swa-full-tokens-ratio 1.0}
    FIT_ARGS="--radix-cache --prompt-len 128"; NEW_TOKENS=${NEW_TOKENS:-128}
  fi
  [ -n "${SKIP_TESTS:-}" ] || tests 0 "(gemma4 and cuda_graphs and not tp2) or partial_verify" tests_gemma4 540
  MODES1=${BENCH_MODES:-plain,builtin,ours-controlled+nooverlap,ours-controlled}
  case ",$MODES1," in
    *,ours-controlled+auto,*) ;;  # BENCH_MODES named it: run once
    *) grep -q "PASSED tests/test_gpu.py::test_gpu_partial_verify_equals_plain\[overlap\]" "$D/tests_gemma4.log" 2>/dev/null \
         && MODES1=$MODES1,ours-controlled+auto ;;
  esac
  CONCURRENCY=${CONCURRENCY:-1,32} bench 0 "$D/bench" 30000 "$MODES1"
  [ -n "${SKIP_TESTS:-}" ] || tests 0 "kernel" tests_kernels 120
  tuned_c32 0 ours-controlled+auto+tuned "--continuations $D/bench/continuations.json"
  if [ -n "${FULL:-}" ]; then
    soak 0 150 540
    SGLANG_DFLASH_TEST_SAMPLES=${SAMPLES:-8000} tests 0 "sampling" tests_sampling 360
  fi
fi
wait
tail -n 3 "$D"/*.log "$D"/*/bench.log > "$D/summary.txt" 2>&1
touch "$D/DONE"
