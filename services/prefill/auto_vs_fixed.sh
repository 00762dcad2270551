#!/usr/bin/env bash
# auto_vs_fixed.sh — kvs-decode in namespace B, kvs-prefill (auto policy, SmolLM2's quality file)
# and kvs-loadgen in A; run it under deploy/netns/kvs-netns.sh, which provides the namespaces and
# the shaping. Prints kvs-loadgen's table, the policy's start-up calibration and the auto metrics.
#
#   deploy/netns/kvs-netns.sh run --rate 1gbit -- services/prefill/auto_vs_fixed.sh \
#       models/SmolLM2-135M-Instruct.Q4_1.gguf --codecs auto,identity,uniform_int8,fp8_e4m3 \
#       --min-ta 0.95 --prompt-tokens 256 --requests 12 --concurrency 1 --max-new-tokens 1
#
# Env: BIN (default build/services/bin), PREFILL_EXTRA (more kvs-prefill flags, e.g.
# "--layer-pipelined=false"), QUALITY (default deploy/quality/SmolLM2-135M-Instruct.Q4_1.json).
set -euo pipefail
B=${BIN:-build/services/bin}
QUALITY=${QUALITY:-deploy/quality/SmolLM2-135M-Instruct.Q4_1.json}
MODEL=$1
shift
W=$(mktemp -d)
pids=()
cleanup() {  # SIGTERM (the daemons drain), SIGKILL whatever is left after 15 s
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 150); do
    local alive=0
    for p in "${pids[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
wait_ready() {
  for _ in $(seq 1200); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}
$KVS_RECV_PREFIX "$B/kvs-decode" --listen "$KVS_IP_B:0" --data-host "$KVS_IP_B" --model "$MODEL" --threads 1 \
  --ready-file "$W/decode.ready" --log-level warn >/dev/null 2>"$W/decode.log" &
pids+=($!)
wait_ready "$W/decode.ready"
decode=$(grep '^grpc=' "$W/decode.ready" | cut -d= -f2)
# shellcheck disable=SC2086
"$B/kvs-prefill" --listen 127.0.0.1:0 --decode "$decode" --data-host "$KVS_IP_A" --model "$MODEL" --threads 1 \
  --auto-quality-file "$QUALITY" --metrics-port 0 --ready-file "$W/prefill.ready" ${PREFILL_EXTRA:-} \
  >/dev/null 2>"$W/prefill.log" &
pids+=($!)
wait_ready "$W/prefill.ready"
prefill=$(grep '^grpc=' "$W/prefill.ready" | cut -d= -f2)
metrics=$(grep '^metrics=' "$W/prefill.ready" | cut -d= -f2)
"$B/kvs-loadgen" --target "$prefill" --progress false "$@" || true
grep "auto policy" "$W/prefill.log" || true
curl -s "http://$metrics/metrics" | grep -E '^kvs_prefill_(auto_choice_total|link_gbps)' || true
