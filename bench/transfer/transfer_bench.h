// bench/transfer/transfer_bench.h — `kvs-bench transfer`: measured KV transfer over TCP and UCX,
// beside the raw link measured in the same run and the analytic model (CODECS.md §5).
//
// The sender is this process; the receiver is a second process it starts (itself, with
// --role=recv), optionally through a command prefix such as "ip netns exec kvsB" so the two ends
// sit in different network namespaces (deploy/netns/kvs-netns.sh). Per transport the link is
// measured first (iperf3 for tcp, ucx_perftest ucp_am_bw with the chunk size for UCX), then each
// codec × mode is run (warm-up, then repeats; the median run is reported).
//
//   kvs-bench transfer --model llama-3.1-8b --tokens 2048 --codecs identity,uniform_int8
//       --transports tcp,ucx-tcp --modes pipelined,sequential --json out.json
//
// RunTransfer() is the same sender as a library call (kvs-bench sweep): options as on the command
// line, quiet by default, results returned as the JSON document --json writes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace kvs::bench {

int RunTransferBench(int argc, char** argv);

struct TransferHooks {
  // Called after each codec × mode × transport point with that point's run record.
  std::function<void(const nlohmann::json& run)> on_run;
};

// `args`: kvs-bench transfer options without the program name ("--model", "llama-3.1-8b", ...).
// The receiver is this executable run as `<self> transfer --role recv`.
absl::StatusOr<nlohmann::json> RunTransfer(const std::vector<std::string>& args, const TransferHooks& hooks = {});

}  // namespace kvs::bench
