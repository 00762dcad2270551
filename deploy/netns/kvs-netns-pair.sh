#!/usr/bin/env bash
# kvs-netns-pair.sh — the two-node deployment (deploy/docker-compose.yml) on one machine, without
# Docker: host A and host B are network namespaces joined by a veth pair (kvs-netns.sh), optionally
# shaped with tc. kvs-decode runs in B, kvs-prefill in A (dialling B for gRPC and the data plane),
# kvs-loadgen in A drives kvs-prefill; its summary table is printed, then both daemons are stopped
# with SIGTERM and the namespaces and veth are removed — also when something fails or the script
# is interrupted (Ctrl-C, SIGTERM).
#
#   deploy/netns/kvs-netns-pair.sh [options] [-- KVS-LOADGEN OPTIONS...]
#
#   deploy/netns/kvs-netns-pair.sh --rate 1gbit
#   deploy/netns/kvs-netns-pair.sh --rate 1gbit --requests 25 --prompt-tokens 384 \
#       --codecs identity,uniform_int8 --json /tmp/pair.json
#   deploy/netns/kvs-netns-pair.sh --transport ucx --rate 10gbit -- --check-against identity
#
# Options:
#   --bin-dir DIR        kvs-decode, kvs-prefill, kvs-loadgen, kvs-health (default build/services/bin)
#   --model FILE         GGUF both daemons load (default models/SmolLM2-135M-Instruct.Q4_1.gguf when
#                        present, else tests/data/models/stories260K.gguf)
#   --rate R             tc tbf rate on both veth ends, e.g. 1gbit, 100mbit (default unshaped)
#   --delay D, --loss P  one-way delay (e.g. 5ms) / loss (e.g. 0.1%) with tc netem; a kernel without
#                        sch_netem makes this an error (exit 2), never a silently unshaped link
#   --transport T        data plane: tcp (default) or ucx (UCX over TCP, shared memory refused)
#   --codecs LIST        codecs to compare (default identity,uniform_int8)
#   --requests N         requests per codec (default 25)
#   --concurrency N      outstanding requests (default 1: handoffs measured one at a time)
#   --prompt-tokens N    fixed-length prompts of N token ids, so every request moves the same KV
#                        (default 256; 0 = WikiText-2 paragraphs)
#   --max-new-tokens N   tokens generated per request (default 4)
#   --threads N          torch threads per daemon (default 1)
#   --json FILE          kvs-loadgen's JSON report
#   --prefill-arg A, --decode-arg A
#                        one more option for kvs-prefill / kvs-decode (repeatable), e.g.
#                        --prefill-arg --layer-pipelined=false (the whole KV moves after the
#                        forward, so the handoff is its full wire time, not the last layer's)
#   --name N, --subnet X namespaces N-a/N-b and addresses X.1/X.2 (default kvspair, 10.232.0)
#   --logs DIR           keep the daemons' logs there (default: a temporary directory, printed
#                        and kept on failure)
#
# Exit status: kvs-loadgen's (0 all requests succeeded, 3 some failed, 1/2 no run), 2 bad options
# or no namespaces (needs root), 1 when a daemon did not start. Prints "kvs-netns-pair: ok" last on
# success.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
netns="$here/kvs-netns.sh"

bin_dir="$repo_root/build/services/bin"
model=""
rate=""
delay=""
loss=""
transport=tcp
codecs=identity,uniform_int8
requests=25
concurrency=1
prompt_tokens=256
max_new_tokens=4
threads=1
json=""
name=kvspair
subnet=10.232.0
logs=""
loadgen_extra=()
prefill_extra=()
decode_extra=()

die() { echo "kvs-netns-pair: $*" >&2; exit 2; }
usage() { sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while (($#)); do
  case "$1" in
    --bin-dir|--model|--rate|--delay|--loss|--transport|--codecs|--requests|--concurrency|\
    --prompt-tokens|--max-new-tokens|--threads|--json|--name|--subnet|--logs)
      need_value "$@"
      v=$2
      case "$1" in
        --bin-dir) bin_dir=$v ;; --model) model=$v ;; --rate) rate=$v ;; --delay) delay=$v ;;
        --loss) loss=$v ;; --transport) transport=$v ;; --codecs) codecs=$v ;;
        --requests) requests=$v ;; --concurrency) concurrency=$v ;; --prompt-tokens) prompt_tokens=$v ;;
        --max-new-tokens) max_new_tokens=$v ;; --threads) threads=$v ;; --json) json=$v ;;
        --name) name=$v ;; --subnet) subnet=$v ;; --logs) logs=$v ;;
      esac
      shift 2 ;;
    --prefill-arg) need_value "$@"; prefill_extra+=("$2"); shift 2 ;;
    --decode-arg) need_value "$@"; decode_extra+=("$2"); shift 2 ;;
    --) shift; loadgen_extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[[ "$transport" == tcp || "$transport" == ucx ]] || die "--transport must be tcp or ucx"
for n in "$requests" "$concurrency" "$prompt_tokens" "$max_new_tokens" "$threads"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a number"
done
[[ $(id -u) -eq 0 ]] || die "needs root (ip netns, tc)"
if [[ -z "$model" ]]; then
  model="$repo_root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  [[ -f "$model" ]] || model="$repo_root/tests/data/models/stories260K.gguf"
fi
[[ -f "$model" ]] || die "no model at $model"
for b in kvs-decode kvs-prefill kvs-loadgen kvs-health; do
  [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b is missing (build the services, or pass --bin-dir)"
done
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")

ns_a="${name}-a"; ns_b="${name}-b"
ip_a="${subnet}.1"; ip_b="${subnet}.2"
dev_a="${name}a"; dev_b="${name}b"

own_logs=0
if [[ -z "$logs" ]]; then
  logs=$(mktemp -d "${TMPDIR:-/tmp}/kvs-netns-pair.XXXXXX")
  own_logs=1
fi
mkdir -p "$logs"

decode_pid=""
prefill_pid=""
loadgen_pid=""
ok=0

stop() {  # name pid: SIGTERM (the daemons drain and exit 0), SIGKILL after 15 s
  local what=$1 pid=$2
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kvs-netns-pair: $what did not exit after SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  echo "kvs-netns-pair: $what stopped (exit $rc)" >&2
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n "$loadgen_pid" ]]; then
    # SIGTERM again until it is gone: one that lands between our fork and its exec is lost.
    for _ in $(seq 1 50); do
      kill -TERM "$loadgen_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$loadgen_pid" 2>/dev/null
    wait "$loadgen_pid" 2>/dev/null
  fi
  stop kvs-prefill "$prefill_pid"
  stop kvs-decode "$decode_pid"
  "$netns" down --name "$name"
  if ip netns list | grep -qE "^(${ns_a}|${ns_b})( |$)"; then
    echo "kvs-netns-pair: namespaces still present after teardown" >&2
    rc=1
  fi
  if ((ok)) && ((own_logs)); then
    rm -rf "$logs"
  elif ((!ok)); then
    echo "kvs-netns-pair: failed (exit $rc); logs in $logs" >&2
    for f in "$logs"/*.log; do [[ -f "$f" ]] && { echo "--- $f (tail)" >&2; tail -n 20 "$f" >&2; }; done
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the two hosts ---------------------------------------------------------------------------
netns_opts=(--name "$name" --subnet "$subnet")
[[ -n "$rate" ]] && netns_opts+=(--rate "$rate")
[[ -n "$delay" ]] && netns_opts+=(--delay "$delay")
[[ -n "$loss" ]] && netns_opts+=(--loss "$loss")
"$netns" up "${netns_opts[@]}" >/dev/null

echo "kvs-netns-pair: host A $ns_a ($ip_a) <-> host B $ns_b ($ip_b), rate ${rate:-unshaped}," \
     "delay ${delay:-none}, loss ${loss:-none}, data plane $transport" >&2
echo "kvs-netns-pair: model $model" >&2

# ---- the daemons -----------------------------------------------------------------------------
field() { grep "^$1=" "$2" | cut -d= -f2-; }
wait_ready() {  # name pid ready-file
  for _ in $(seq 1 1200); do
    [[ -s "$3" ]] && grep -q '^grpc=' "$3" && return 0
    kill -0 "$2" 2>/dev/null || { echo "kvs-netns-pair: $1 exited during start-up" >&2; return 1; }
    sleep 0.1
  done
  echo "kvs-netns-pair: $1 not ready after 120 s" >&2
  return 1
}

decode_opts=(--transports "$transport" --data-host "$ip_b")
prefill_opts=(--transport "$transport" --data-host "$ip_a")
if [[ "$transport" == ucx ]]; then
  # Two namespaces of one machine: UCX would pick shared memory; name the lane and require it.
  decode_opts+=(--ucx-tls tcp --require-lane tcp)
  prefill_opts+=(--ucx-tls tcp --require-lane tcp)
  export UCX_NET_DEVICES_A="$dev_a" UCX_NET_DEVICES_B="$dev_b"
fi

ip netns exec "$ns_b" env ${UCX_NET_DEVICES_B:+UCX_NET_DEVICES=$UCX_NET_DEVICES_B} \
  "$bin_dir/kvs-decode" --listen "$ip_b:0" --model "$model" "${decode_opts[@]}" --threads "$threads" \
  --metrics-host "$ip_b" --metrics-port 0 --ready-file "$logs/decode.ready" "${decode_extra[@]}" \
  >"$logs/decode.out" 2>"$logs/decode.log" &
decode_pid=$!
wait_ready kvs-decode "$decode_pid" "$logs/decode.ready" || exit 1
decode_addr=$(field grpc "$logs/decode.ready")

ip netns exec "$ns_a" env ${UCX_NET_DEVICES_A:+UCX_NET_DEVICES=$UCX_NET_DEVICES_A} \
  "$bin_dir/kvs-prefill" --listen "$ip_a:0" --decode "$decode_addr" --model "$model" "${prefill_opts[@]}" \
  --threads "$threads" --metrics-host "$ip_a" --metrics-port 0 --ready-file "$logs/prefill.ready" \
  "${prefill_extra[@]}" >"$logs/prefill.out" 2>"$logs/prefill.log" &
prefill_pid=$!
wait_ready kvs-prefill "$prefill_pid" "$logs/prefill.ready" || exit 1
prefill_addr=$(field grpc "$logs/prefill.ready")

# Both answer grpc.health.v1 across the link (what the compose healthchecks ask).
ip netns exec "$ns_a" "$bin_dir/kvs-health" --quiet "$prefill_addr" || exit 1
ip netns exec "$ns_a" "$bin_dir/kvs-health" --quiet "$decode_addr" || exit 1
echo "kvs-netns-pair: kvs-decode $decode_addr (/metrics $(field metrics "$logs/decode.ready")) in $ns_b," \
     "kvs-prefill $prefill_addr (/metrics $(field metrics "$logs/prefill.ready")) in $ns_a" >&2

# ---- the load --------------------------------------------------------------------------------
loadgen=("$bin_dir/kvs-loadgen" --target "$prefill_addr" --codecs "$codecs" --requests "$requests"
  --concurrency "$concurrency" --max-new-tokens "$max_new_tokens" --timeout-ms 120000 --progress=false)
if ((prompt_tokens > 0)); then
  loadgen+=(--prompt-tokens "$prompt_tokens" --num-prompts 4)
else
  loadgen+=(--prompts-file "$repo_root/tests/data/text/wikitext-2-raw-test-excerpt.txt" --num-prompts 8)
fi
[[ -n "$json" ]] && loadgen+=(--json "$json")
echo "kvs-netns-pair: kvs-loadgen: $requests requests per codec ($codecs), concurrency $concurrency" >&2
# In the background with `wait`, so that a signal to this script (not only Ctrl-C to the whole
# process group) runs the teardown at once; cleanup() stops it.
ip netns exec "$ns_a" "${loadgen[@]}" "${loadgen_extra[@]}" &
loadgen_pid=$!
rc=0
wait "$loadgen_pid" || rc=$?
loadgen_pid=""
# What the link did: the tbf counters (sent bytes, overlimits = packets the rate held back).
for side in "$ns_a:$dev_a" "$ns_b:$dev_b"; do
  echo "kvs-netns-pair: qdisc ${side%%:*} $(ip netns exec "${side%%:*}" tc -s qdisc show dev "${side##*:}" | tr -s ' \n' ' ')" >&2
done
if ((rc != 0)); then
  echo "kvs-netns-pair: kvs-loadgen exited $rc" >&2
  exit "$rc"
fi
ok=1
echo "kvs-netns-pair: ok" >&2
