#!/bin/bash
# The main job, on an embedded default: a real SGLang server with our DFLASH worker on the CPU.
# Creates the environment if missing, builds tiny random-weight models, starts
#   python -m sglang.launch_server --device cpu --speculative-algorithm DFLASH ...
# on 127.0.0.1:30000, sends one OpenAI chat request, prints the reply and the speculative
# statistics, and stops the server.  The tiny models are random, so the reply is noise and the
# draft is rarely right (about 1 token per step); the GPU benchmarks use controlled acceptance.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-30000}
bash "$ROOT/scripts/setup_env.sh"
. "$ROOT/.venv/bin/activate"
export SGLANG_USE_CPU_ENGINE=1 TORCHDYNAMO_DISABLE=1
MODELS=$(cd "$ROOT/tests" && python -c 'from helpers import tiny_models; print(tiny_models())')
LOG=$(mktemp /tmp/sglang-dflash-demo.XXXX.log)
echo "[demo] models in $MODELS; server log in $LOG"
python -m sglang.launch_server --model-path "$MODELS/qwen3" --device cpu --attention-backend torch_native \
  --dtype float32 --mem-fraction-static 0.05 --max-total-tokens 16384 --host 127.0.0.1 --port "$PORT" \
  --speculative-algorithm DFLASH --speculative-draft-model-path "$MODELS/qwen3-dflash" \
  --speculative-num-draft-tokens 16 > "$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for i in $(seq 1 300); do
  if ! kill -0 $PID 2>/dev/null; then echo "[demo] server died:"; tail -40 "$LOG"; exit 1; fi
  python -c "import requests,sys; sys.exit(requests.get('http://127.0.0.1:$PORT/health', timeout=2).status_code != 200)" 2>/dev/null && break
  sleep 1
done
echo "[demo] server ready after ${i}s: $(grep -o 'DFLASH implementation: .*' "$LOG" | head -1)"
PORT=$PORT python - <<'PY'
import json, os, requests
url = f"http://127.0.0.1:{os.environ['PORT']}"
body = {"model": "default", "messages": [{"role": "user", "content": "What is speculative decoding?"}],
        "max_tokens": 48, "temperature": 0}
r = requests.post(url + "/v1/chat/completions", json=body, timeout=600)
r.raise_for_status()
reply = r.json()
print("[demo] reply:", repr(reply["choices"][0]["message"]["content"]))
print("[demo] usage:", json.dumps(reply["usage"]))
g = requests.post(url + "/generate", json={"text": "What is speculative decoding?",
                  "sampling_params": {"max_new_tokens": 48, "temperature": 0, "ignore_eos": True}}, timeout=600).json()
mi = g["meta_info"]
print(f"[demo] speculative stats: verify steps {mi['spec_verify_ct']}, tokens {mi['completion_tokens']}, "
      f"accept length {mi['spec_accept_length']:.2f} tokens/step")
state = requests.get(url + "/get_server_info", timeout=30).json()["internal_states"][0]
print(f"[demo] server avg_spec_accept_length: {state.get('avg_spec_accept_length')}")
PY
echo "[demo] done; stopping the server"
