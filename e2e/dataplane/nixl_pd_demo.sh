#!/usr/bin/env bash
# The measured NIXL prefill -> decode recipe on CPU, as a script:
#   1. setup_env.sh (venv) and tiny_model.py (model) if needed;
#   2. a prefill engine (kv_producer) and a decode engine (kv_consumer) with NixlConnector
#      over UCX/TCP, plus (unless PLAIN=0) a plain engine as the greedy reference;
#   3. one disaggregated request by hand (pd_request.py), which checks that the decode
#      engine's vllm:prompt_tokens_by_source_total{source="external_kv_transfer"} grew and
#      that the greedy output equals the plain engine's;
#   4. kills every engine it started (also on error / Ctrl-C).
#
# Usage: e2e/dataplane/nixl_pd_demo.sh        (about 3-5 minutes on 2 cores)
# Env: TANDEM_CACHE, PLAIN=0|1 (default 1), P_PORT/D_PORT/PLAIN_PORT (8101/8102/8100),
#      P_SIDE/D_SIDE (NIXL side-channel ports, 5600/5601), READY_TIMEOUT (s, default 600),
#      LOG_DIR (default $TANDEM_CACHE/dataplane-logs/<timestamp>).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="${TANDEM_CACHE:-$HOME/.cache/tandem}"
P_PORT=${P_PORT:-8101}; D_PORT=${D_PORT:-8102}; PLAIN_PORT=${PLAIN_PORT:-8100}
P_SIDE=${P_SIDE:-5600}; D_SIDE=${D_SIDE:-5601}
PLAIN=${PLAIN:-1}
READY_TIMEOUT=${READY_TIMEOUT:-600}
LOG_DIR=${LOG_DIR:-$CACHE/dataplane-logs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$LOG_DIR"

PY=$("$HERE/setup_env.sh" | tail -n1)
VENV=$(dirname "$(dirname "$PY")")
MODEL="$CACHE/models/tiny-llama"
"$PY" "$HERE/tiny_model.py" "$MODEL" >&2

declare -A PIDS=() STARTED=()
cleanup() {
  local name pid
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# Environment common to every engine. OMP: vLLM's auto-binding reserves one core per rank
# plus one more when a KV connector is set; on a 2-core machine that leaves nothing and the
# worker falls back to 2 spinning OpenMP threads on both cores (a 32-token completion took
# 29 s instead of 1 s with three engines up). nobind + 1 thread lets the OS schedule.
COMMON_ENV=(HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 PYTHONHASHSEED=0
            VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=1)
COMMON_ARGS=(serve "$MODEL" --served-model-name tiny --host 127.0.0.1
             --max-model-len 1024 --dtype bfloat16 --enforce-eager)
nixl_cfg() {  # $1 role. num_threads: NIXL UCX worker threads (vLLM's default is 4)
  printf '{"kv_connector":"NixlConnector","kv_role":"%s","kv_buffer_device":"cpu","kv_connector_extra_config":{"num_threads":1}}' "$1"
}

start() {  # name port [env...] -- [args...]
  local name=$1 port=$2; shift 2
  local envs=() args=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do envs+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  args=("$@")
  printf '%q ' env "${COMMON_ENV[@]}" "${envs[@]}" "$VENV/bin/vllm" "${COMMON_ARGS[@]}" \
    --port "$port" "${args[@]}" >"$LOG_DIR/$name.cmd"
  echo >>"$LOG_DIR/$name.cmd"
  STARTED[$name]=$(date +%s.%N)
  (cd /tmp && exec setsid env "${COMMON_ENV[@]}" "${envs[@]}" "$VENV/bin/vllm" \
     "${COMMON_ARGS[@]}" --port "$port" "${args[@]}" >"$LOG_DIR/$name.log" 2>&1) &
  PIDS[$name]=$!
}

wait_ready() {  # name port
  local name=$1 port=$2 t0=${STARTED[$1]}
  while :; do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      echo "$name ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s" >&2
      return 0
    fi
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      echo "$name exited before becoming ready; last log lines:" >&2
      tail -n 40 "$LOG_DIR/$name.log" >&2
      return 1
    fi
    if awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$READY_TIMEOUT" 'BEGIN{exit !(b-a>t)}'; then
      echo "$name not ready after $READY_TIMEOUT s" >&2
      tail -n 40 "$LOG_DIR/$name.log" >&2
      return 1
    fi
    sleep 1
  done
}

pss_gib() {  # PSS of an engine's process tree (API server, EngineCore, Worker)
  local root=$1 pids total=0 p v
  pids=$(ps -o pid= --ppid "$root"; ps -o pid= --ppid "$(ps -o pid= --ppid "$root" | tr '\n' ',' | sed 's/,$//')" 2>/dev/null || true)
  for p in $root $pids; do
    v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  awk -v k="$total" 'BEGIN{printf "%.2f", k/1048576}'
}

start prefill "$P_PORT" VLLM_NIXL_SIDE_CHANNEL_HOST=127.0.0.1 VLLM_NIXL_SIDE_CHANNEL_PORT="$P_SIDE" \
  UCX_TLS=tcp,self,sm -- --kv-transfer-config "$(nixl_cfg kv_producer)"
start decode "$D_PORT" VLLM_NIXL_SIDE_CHANNEL_HOST=127.0.0.1 VLLM_NIXL_SIDE_CHANNEL_PORT="$D_SIDE" \
  UCX_TLS=tcp,self,sm -- --kv-transfer-config "$(nixl_cfg kv_consumer)"
if [[ "$PLAIN" == "1" ]]; then start plain "$PLAIN_PORT" --; fi

wait_ready prefill "$P_PORT"
wait_ready decode "$D_PORT"
PLAIN_ARGS=()
if [[ "$PLAIN" == "1" ]]; then
  wait_ready plain "$PLAIN_PORT"
  PLAIN_ARGS=(--plain "http://127.0.0.1:$PLAIN_PORT")
fi
for name in "${!PIDS[@]}"; do echo "$name PSS $(pss_gib "${PIDS[$name]}") GiB" >&2; done

# Request 1 triggers the lazy NIXL handshake (decoder -> prefiller side channel). vLLM 0.32
# waits a hard-coded 5 s for the reply; on an overloaded 2-core machine that can time out,
# the decode call then fails with HTTP 500 and the next request handshakes again. So
# request 1 is a warm-up whose failure is reported but tolerated; request 2 must pass.
echo "--- disaggregated request 1 (warm-up, includes the NIXL handshake)" >&2
python3 "$HERE/pd_request.py" --prefill "http://127.0.0.1:$P_PORT" \
  --decode "http://127.0.0.1:$D_PORT" "${PLAIN_ARGS[@]}" | tee "$LOG_DIR/pd_request_1.json" \
  || echo "warm-up request failed (tolerated)" >&2
echo "--- disaggregated request 2" >&2
rc=0
python3 "$HERE/pd_request.py" --prefill "http://127.0.0.1:$P_PORT" \
  --decode "http://127.0.0.1:$D_PORT" "${PLAIN_ARGS[@]}" | tee "$LOG_DIR/pd_request_2.json" || rc=1
echo "logs: $LOG_DIR" >&2
exit $rc
