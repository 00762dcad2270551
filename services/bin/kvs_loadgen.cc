// kvs-loadgen: drives a kvs-prefill and compares codecs on the real service.
//
//   kvs-loadgen --target 127.0.0.1:50051 --requests 200 --concurrency 8
//   kvs-loadgen --target HOST:PORT --codecs identity,uniform_int8,kivi_2bit,cachegen \
//               --check-against identity --json out.json --save-outputs texts.json
//   kvs-loadgen --rate 20 --duration-s 30          # open loop, Poisson arrivals
//   kvs-loadgen --codecs auto,identity,uniform_int8 --min-ta 0.95   # auto with a TA floor; the
//                                                   # table says what auto resolved to
//
// Prints a table per codec (throughput, TTFT / handoff / TPOT percentiles, wire bytes, ratio,
// token agreement). Exit status: 0 when every request succeeded, 3 when some failed, 1 when the
// run could not start, 2 for bad options.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

#include "absl/strings/str_format.h"
#include "common/log/log.h"
#include "services/config/config.h"
#include "services/control/grpc_server.h"
#include "services/control/grpc_services.h"
#include "services/control/tls.h"
#include "services/loadgen/loadgen.h"

namespace {

int Fail(const absl::Status& s, int code) {
  std::cerr << "kvs-loadgen: " << s.message() << "\n";
  return code;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::cout << text << "\n";
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::trunc);
  out << text << "\n";
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  kvs::loadgen::LoadgenOptions o;
  o.prompts_file = KVS_DEFAULT_PROMPTS;
  kvs::config::ConfigTable table("kvs-loadgen", "Load generator for kvs-prefill: compares codecs on the service.");
  kvs::loadgen::BindLoadgenOptions(table, &o);
  kvs::control::TlsOptions tls;  // TLS to the target (services/control/tls.h); none set = insecure
  table.String("tls_ca", &tls.ca_file, "TLS: CA certificates (PEM) that verify the target; any tls_* key = TLS");
  table.String("tls_cert", &tls.cert_file, "TLS: client certificate (PEM) for an mTLS target");
  table.String("tls_key", &tls.key_file, "TLS: private key (PEM) of tls_cert");
  table.String("tls_server_name", &tls.server_name_override,
               "TLS: name the target's certificate must carry (default: the host in target)");
  absl::StatusOr<kvs::config::CommandLine> cl = kvs::config::Load(table, argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->help) {
    std::cout << table.Usage();
    return 0;
  }
  if (cl->dump_config) {
    std::cout << table.Dump();
    return 0;
  }
  if (absl::Status s = kvs::loadgen::ValidateLoadgenOptions(o); !s.ok()) return Fail(s, 2);
  kvs::ConfigureLogging(o.log_level);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = kvs::control::MakeChannel(o.target, tls);
  if (!channel.ok()) return Fail(channel.status(), 2);
  kvs::control::GrpcPrefillClient client(*channel, o.target);
  absl::StatusOr<kvs::control::ServerInfo> info = client.Info(absl::Now() + absl::Seconds(10));
  if (!info.ok()) return Fail(info.status(), 1);
  absl::StatusOr<std::vector<kvs::loadgen::Prompt>> prompts = kvs::loadgen::LoadPrompts(o, info->vocab_size);
  if (!prompts.ok()) return Fail(prompts.status(), 1);
  std::cerr << absl::StrFormat("kvs-loadgen: %s serves %s (%d layers, %d KV heads, head_dim %d), %s; %d prompts\n",
                               o.target, info->model_name, info->layers, info->kv_heads, info->head_dim,
                               info->version, prompts->size());

  const bool bar = o.progress && isatty(STDERR_FILENO);
  std::mutex mu;
  kvs::loadgen::ProgressFn progress = [&](const std::string& codec, int64_t done, int64_t total) {
    std::lock_guard<std::mutex> l(mu);
    if (bar) {
      const int width = 30;
      const int filled = total > 0 ? static_cast<int>(width * done / total) : 0;
      std::cerr << absl::StrFormat("\r  %-22s [%s%s] %d%s", codec, std::string(filled, '#'),
                                   std::string(width - filled, '.'), done,
                                   total > 0 ? absl::StrFormat("/%d", total) : std::string())
                << std::flush;
      if (total > 0 && done == total) std::cerr << "\n";
    } else if (o.progress && total > 0 && (done == total || done % std::max<int64_t>(1, total / 4) == 0)) {
      std::cerr << absl::StrFormat("  %s: %d/%d\n", codec, done, total);
    }
  };
  absl::StatusOr<kvs::loadgen::LoadgenReport> report = kvs::loadgen::RunLoadgen(o, *prompts, client, progress);
  if (bar) std::cerr << "\n";
  if (!report.ok()) return Fail(report.status(), 1);

  if (o.show_sample && !report->codecs.empty()) {
    std::cout << "prompt: " << (*prompts)[0].Describe() << "\n";
    for (const kvs::loadgen::CodecSummary& s : report->codecs) {
      for (const kvs::loadgen::RequestResult& r : s.results) {
        if (r.prompt_index == 0 && r.status.ok()) {
          std::cout << absl::StrFormat("  %-14s| %s\n", s.codec, r.text);
          break;
        }
      }
    }
    std::cout << "\n";
  }
  std::cout << kvs::loadgen::FormatTable(*report) << std::flush;
  if (!o.json.empty()) {
    if (absl::Status s = WriteText(o.json, kvs::loadgen::ToJson(*report, false)); !s.ok()) return Fail(s, 1);
  }
  if (!o.save_outputs.empty()) {
    if (absl::Status s = WriteText(o.save_outputs, kvs::loadgen::ToJson(*report, true)); !s.ok()) return Fail(s, 1);
  }
  int64_t errors = 0;
  for (const kvs::loadgen::CodecSummary& s : report->codecs) errors += s.errors;
  return errors == 0 ? 0 : 3;
}
