// bench/sweep/sweep_bench.h — `kvs-bench sweep`: the KVShuttle paper's grid measured, not computed.
//
// codecs × model geometries × prompt lengths × link rates × sequential / pipelined, every point a
// real transfer (kvs-bench transfer's sender and receiver, TCP by default) with warm-up and
// repeats. Each shaped rate is a veth pair between two network namespaces shaped with tc tbf
// (deploy/netns/kvs-netns.sh, created and torn down by the sweep); "veth" is the same pair
// unshaped and "loopback" is 127.0.0.1 without namespaces. Per point the JSON holds the median
// handoff and its spread, the stages, the bytes, the link rate measured there (iperf3) and the
// analytic predictions at that rate with the deviation; then the speed-up over raw identity and
// the measured break-even bandwidth per codec (bench/sweep/sweep_analysis.h).
//
//   kvs-bench sweep --grid quick --json sweep.json
//   kvs-bench sweep --grid paper --real-kv /tmp/kv/smollm2 --json sweep_paper.json
//   kvs-bench sweep --grid quick --plan        (the points and a lower bound of the time, no runs)
#pragma once

namespace kvs::bench {

int RunSweepBench(int argc, char** argv);

}  // namespace kvs::bench
