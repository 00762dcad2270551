#!/usr/bin/env bash
# Several kvs-prefill configurations against one kvs-decode, interleaved round by round so that each
# sees the same background load; the measurement behind services/prefill/README.md "layer-pipelined
# on vs off". Summarise with bench/layer_pipelining/summarize.py OUT A B.
#
#   bench/layer_pipelining/compare.sh                                  loopback, defaults below
#   PT=256 ROUNDS=10 REQ=1 CONFIGS="on:0:0:true off:0:0:false" OUT=/tmp/lp bench/layer_pipelining/compare.sh
#   deploy/netns/kvs-netns.sh run --rate 1gbit -- env DPREFIX="ip netns exec kvs-b" \
#       PT=256 ROUNDS=8 REQ=1 CONFIGS="on:0:0:true off:0:0:false" OUT=/tmp/lp1g \
#       sh -c 'DHOST=$KVS_IP_B PHOST=$KVS_IP_A bench/layer_pipelining/compare.sh'
#
# CONFIGS: space-separated name:threads:codec_threads:layer_pipelined (threads 0 = the default).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
B=${KVS_BUILD_DIR:-$repo_root/build}/services/bin
MODEL=${MODEL:-$repo_root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${ROUNDS:-3}; PT=${PT:-128}; REQ=${REQ:-3}; CODECS=${CODECS:-identity,uniform_int8}
CONFIGS=${CONFIGS:-"on:0:0:true off:0:0:false"}
DHOST=${DHOST:-127.0.0.1}; PHOST=${PHOST:-127.0.0.1}; DPREFIX=${DPREFIX:-}
OUT=${OUT:-$(mktemp -d /tmp/kvs-layer-pipelining.XXXXXX)}
mkdir -p "$OUT"; rm -f "$OUT"/*.ready "$OUT"/*.json
PIDS=()
stop() {  # SIGTERM (the daemons drain), SIGKILL after 15 s
  kill "${PIDS[@]}" 2>/dev/null || true
  for _ in $(seq 1 150); do
    local alive=0 p
    for p in "${PIDS[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    ((alive)) || break
    sleep 0.1
  done
  kill -KILL "${PIDS[@]}" 2>/dev/null || true
}
trap stop EXIT
wait_ready() {
  for _ in $(seq 1 600); do
    [[ -s $1 ]] && grep -q grpc= "$1" && return 0
    sleep 0.2
  done
  echo "compare.sh: no ready file $1" >&2
  exit 1
}
# shellcheck disable=SC2086  # DPREFIX is a command prefix
$DPREFIX "$B/kvs-decode" --listen "$DHOST:0" --data-host "$DHOST" --model "$MODEL" --threads 1 \
  --ready-file "$OUT/d.ready" --log-level warn >"$OUT/d.log" 2>&1 &
PIDS+=($!)
wait_ready "$OUT/d.ready"
D=$(grep -o 'grpc=[^ ]*' "$OUT/d.ready" | cut -d= -f2)
declare -A ADDR
for c in $CONFIGS; do
  IFS=: read -r n t ct lp <<<"$c"
  "$B/kvs-prefill" --listen "$PHOST:0" --data-host "$PHOST" --decode "$D" --model "$MODEL" --threads "$t" \
    --codec-threads "$ct" --layer-pipelined="$lp" --ready-file "$OUT/$n.ready" --log-level warn >"$OUT/$n.log" 2>&1 &
  PIDS+=($!)
done
for c in $CONFIGS; do
  n=${c%%:*}
  wait_ready "$OUT/$n.ready"
  ADDR[$n]=$(grep -o 'grpc=[^ ]*' "$OUT/$n.ready" | cut -d= -f2)
done
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONFIGS; do
    n=${c%%:*}
    "$B/kvs-loadgen" --target "${ADDR[$n]}" --prompt-tokens "$PT" --num-prompts 3 --requests "$REQ" \
      --concurrency 1 --codecs "$CODECS" --max-new-tokens 2 --json "$OUT/r${r}_$n.json" --progress=false \
      >"$OUT/r${r}_$n.txt" 2>&1
  done
done
echo "compare.sh: results in $OUT (bench/layer_pipelining/summarize.py $OUT on off)"
