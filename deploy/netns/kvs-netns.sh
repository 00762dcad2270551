#!/usr/bin/env bash
# kvs-netns.sh — a two-host link on one machine: network namespaces A and B joined by a veth
# pair, optionally shaped with tc tbf (this kernel has tbf/htb, no netem), and torn down
# whatever happens.
#
#   kvs-netns.sh run [options] -- CMD [ARGS...]
#       Creates the pair, runs CMD inside namespace A, then removes everything (also when CMD
#       fails or the script is interrupted). CMD sees:
#         KVS_NS_A, KVS_NS_B        namespace names
#         KVS_IP_A, KVS_IP_B        addresses (A = 10.231.0.1, B = 10.231.0.2 by default)
#         KVS_DEV_A, KVS_DEV_B      veth device names (for UCX_NET_DEVICES)
#         KVS_RECV_PREFIX           "ip netns exec <B>": prefix a command with it to run it in B
#         KVS_RATE                  the tbf rate, or "none" (KVS_DELAY, KVS_LOSS: netem, or "none")
#   kvs-netns.sh up [options]      create and leave up (prints the same variables)
#   kvs-netns.sh exec a|b [--name N] -- CMD...   run a command in A or B
#   kvs-netns.sh down [--name N]   stop what still runs inside, then remove (idempotent)
#
# Options: --name N (default kvs; namespaces N-a, N-b), --rate R (tbf rate, e.g. 1gbit, 10gbit;
# default: unshaped), --burst B (default 256kb up to 1gbit, 2mb above), --latency L (tbf queue
# limit as latency, default 50ms — not a delay), --subnet X (first three octets, default 10.231.0),
# --delay D / --loss P (one-way delay, e.g. 5ms, and loss, e.g. 0.1%, on each end with tc netem
# below the tbf; a kernel without sch_netem makes this an error, exit 2, never an unshaped link).
#
# Example (kvs-bench transfer over a 1 Gbit/s link, receiver in B, sender and iperf3 client in A):
#   deploy/netns/kvs-netns.sh run --rate 1gbit -- sh -c \
#     'build/bench/kvs-bench transfer --recv-prefix "$KVS_RECV_PREFIX" --recv-host "$KVS_IP_B" \
#        --ucx-devices "$KVS_DEV_A" --recv-ucx-devices "$KVS_DEV_B" --transports tcp,ucx-tcp'
set -euo pipefail

name=kvs
rate=""
burst=""
latency=50ms
subnet=10.231.0
delay=""
loss=""

die() { echo "kvs-netns: $*" >&2; exit 2; }

parse_opts() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) name="$2"; shift 2 ;;
      --rate) rate="$2"; shift 2 ;;
      --burst) burst="$2"; shift 2 ;;
      --latency) latency="$2"; shift 2 ;;
      --subnet) subnet="$2"; shift 2 ;;
      --delay) delay="$2"; shift 2 ;;
      --loss) loss="$2"; shift 2 ;;
      --) shift; rest=("$@"); return ;;
      *) die "unknown option $1" ;;
    esac
  done
  rest=()
}

names() {
  ns_a="${name}-a"; ns_b="${name}-b"
  dev_a="${name}a"; dev_b="${name}b"   # veth names must stay under 16 characters
  ip_a="${subnet}.1"; ip_b="${subnet}.2"
  [[ ${#dev_a} -le 15 ]] || die "--name too long for a device name"
}

kill_inside() {  # what still runs in the namespaces (a receiver, an iperf3 server), not this script
  local pids=() p ns
  for ns in "$ns_a" "$ns_b"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do
      [[ "$p" == "$$" || "$p" == "$PPID" ]] || pids+=("$p")
    done
  done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${pids[@]}"; do
      # Exited but not yet reaped by its parent (a zombie) counts as gone.
      if kill -0 "$p" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]]; then alive=1; fi
    done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

down() {
  names
  kill_inside
  ip netns del "$ns_a" 2>/dev/null || true   # deleting a namespace deletes its veth end (and the peer)
  ip netns del "$ns_b" 2>/dev/null || true
  ip link del "$dev_a" 2>/dev/null || true
}

netem() {  # dev ns parent...: netem delay/loss, or an error naming the missing qdisc
  [[ -z "$delay" && -z "$loss" ]] && return 0
  local dev=$1 ns=$2; shift 2
  local args=(netem)
  [[ -n "$delay" ]] && args+=(delay "$delay")
  [[ -n "$loss" ]] && args+=(loss "$loss")
  local err
  if ! err=$(ip netns exec "$ns" tc qdisc add dev "$dev" "$@" "${args[@]}" 2>&1); then
    echo "kvs-netns: --delay/--loss need tc netem, which this kernel does not offer ($err);" \
         "load sch_netem (modprobe sch_netem) or shape the rate only" >&2
    exit 2
  fi
}

shape() {  # dev ns
  if [[ -z "$rate" ]]; then
    netem "$1" "$2" root
    return 0
  fi
  local b="$burst"
  if [[ -z "$b" ]]; then
    # tbf needs burst >= rate / HZ; 256kb holds 1 Gbit/s, 2mb holds 10 Gbit/s (ARCHITECTURE.md §5).
    case "$rate" in
      *gbit|*Gbit) if [[ "${rate%[gG]bit}" -gt 1 ]]; then b=2mb; else b=256kb; fi ;;
      *) b=256kb ;;
    esac
  fi
  ip netns exec "$2" tc qdisc replace dev "$1" root handle 1: tbf rate "$rate" burst "$b" latency "$latency"
  netem "$1" "$2" parent 1:1 handle 10:
}

up() {
  names
  [[ $(id -u) -eq 0 ]] || die "needs root (ip netns, tc)"
  down
  ip netns add "$ns_a"
  ip netns add "$ns_b"
  ip link add "$dev_a" type veth peer name "$dev_b"
  ip link set "$dev_a" netns "$ns_a"
  ip link set "$dev_b" netns "$ns_b"
  ip -n "$ns_a" addr add "$ip_a/24" dev "$dev_a"
  ip -n "$ns_b" addr add "$ip_b/24" dev "$dev_b"
  for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
  ip -n "$ns_a" link set "$dev_a" up
  ip -n "$ns_b" link set "$dev_b" up
  shape "$dev_a" "$ns_a"
  shape "$dev_b" "$ns_b"
  ip -n "$ns_a" link show "$dev_a" | grep -q "state UP" || die "veth $dev_a did not come up"
}

export_vars() {
  export KVS_NS_A="$ns_a" KVS_NS_B="$ns_b" KVS_IP_A="$ip_a" KVS_IP_B="$ip_b"
  export KVS_DEV_A="$dev_a" KVS_DEV_B="$dev_b" KVS_RECV_PREFIX="ip netns exec $ns_b"
  export KVS_RATE="${rate:-none}" KVS_DELAY="${delay:-none}" KVS_LOSS="${loss:-none}"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  run)
    parse_opts "$@"
    [[ ${#rest[@]} -gt 0 ]] || die "run: no command (kvs-netns.sh run [options] -- CMD...)"
    trap down EXIT
    trap 'exit 130' INT TERM
    up
    export_vars
    echo "kvs-netns: $ns_a ($ip_a, $dev_a) <-> $ns_b ($ip_b, $dev_b), rate ${rate:-unshaped}" >&2
    set +e
    ip netns exec "$ns_a" "${rest[@]}"
    rc=$?
    set -e
    exit $rc
    ;;
  up)
    parse_opts "$@"
    trap down EXIT   # a failed `up` leaves nothing half-built
    up
    trap - EXIT
    export_vars
    env | grep '^KVS_' | sort
    ;;
  exec)
    side="${1:-}"; shift || true
    parse_opts "$@"
    names
    case "$side" in a) ns="$ns_a" ;; b) ns="$ns_b" ;; *) die "exec a|b CMD..." ;; esac
    export_vars
    exec ip netns exec "$ns" "${rest[@]}"
    ;;
  down)
    parse_opts "$@"
    down
    ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    [[ "$cmd" == "-h" || "$cmd" == "--help" ]] && exit 0
    exit 2
    ;;
esac
