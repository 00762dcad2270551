// kvs-bench: kvshuttle's benchmarks, one subcommand each.
//   kvs-bench codecs    codec throughput vs memcpy, ratio, cosine
//   kvs-bench transfer  measured KV transfer over TCP/UCX vs the analytic model (services builds)
//   kvs-bench sweep     the paper's grid over shaped links, measured break-even (services builds)
//   kvs-bench quality   token agreement / perplexity per codec on a real model (torch builds)
#include <cstring>
#include <iostream>
#include <string>

#include "bench/codecs/codecs_bench.h"
#if KVS_BENCH_HAS_TRANSFER
#include "bench/sweep/sweep_bench.h"
#include "bench/transfer/transfer_bench.h"
#endif
#if KVS_BENCH_HAS_QUALITY
#include "bench/quality/quality_bench.h"
#endif

namespace {

int Usage(std::ostream& os, int rc) {
  os << "usage: kvs-bench <subcommand> [options]   (kvs-bench <subcommand> --help)\n"
        "subcommands:\n"
        "  codecs     codec encode/decode throughput vs memcpy, ratio, key/value cosine\n";
#if KVS_BENCH_HAS_TRANSFER
  os << "  transfer   measured KV transfer over TCP/UCX vs the analytic model\n"
        "  sweep      the paper's grid over shaped links: codecs x models x lengths x rates, break-even\n";
#endif
#if KVS_BENCH_HAS_QUALITY
  os << "  quality    token agreement, perplexity and cosine per codec on a real model\n";
#endif
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage(std::cerr, 2);
  const std::string sub = argv[1];
  if (sub == "--help" || sub == "-h" || sub == "help") return Usage(std::cout, 0);
  // Subcommands see argv[0] = "kvs-bench <sub>" and their own options.
  if (sub == "codecs") return kvs::bench::RunCodecsBench(argc - 1, argv + 1);
#if KVS_BENCH_HAS_TRANSFER
  if (sub == "transfer") return kvs::bench::RunTransferBench(argc - 1, argv + 1);
  if (sub == "sweep") return kvs::bench::RunSweepBench(argc - 1, argv + 1);
#endif
#if KVS_BENCH_HAS_QUALITY
  if (sub == "quality") return kvs::bench::RunQualityBench(argc - 1, argv + 1);
#endif
  std::cerr << "kvs-bench: unknown subcommand '" << sub << "'\n";
  return Usage(std::cerr, 2);
}
