// TLS / mTLS through the real daemons: kvs-decode requiring client certificates, kvs-prefill
// serving TLS (also requiring client certificates) and dialling kvs-decode with its own client
// certificate; kvs-health and kvs-loadgen with --tls-* flags; stories260K, a few tokens. The
// certificates are made at test time with the openssl command (tests/testing/tls_certs.h).
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/control/grpc_server.h"
#include "services/control/grpc_services.h"
#include "services/control/tls.h"
#include "tests/integration/daemons/daemon_process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_data.h"
#include "tests/testing/tls_certs.h"

namespace kvs::testing {
namespace {

using ::testing::HasSubstr;

std::string ModelPath() { return TestDataDir() + "/models/stories260K.gguf"; }

std::string TempDir() { return ProcessTempDir("kvs_daemons_tls_"); }

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

absl::StatusOr<control::RequestStats> Generate(control::PrefillApi& client, std::string* text) {
  control::GenerateParams p;
  p.prompt = "Once upon a time";
  p.max_new_tokens = 8;
  p.codec = "identity";
  return client.Generate(p, [&](const control::TokenPiece& t) {
    *text += t.text;
    return absl::OkStatus();
  }, absl::Now() + absl::Seconds(60));
}

// One mTLS decode + mTLS prefill pair for the suite.
class DaemonsTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TlsCerts> c = MakeTlsCerts(TempDir() + "/certs");
    ASSERT_TRUE(c.ok()) << c.status();
    certs_ = new TlsCerts(*std::move(c));
    const std::vector<std::string> server_tls = {"--tls-cert", certs_->server_cert, "--tls-key", certs_->server_key,
                                                 "--tls-ca", certs_->ca, "--tls-require-client-cert"};
    absl::StatusOr<std::unique_ptr<DaemonProcess>> d = DaemonProcess::Start(
        Concat({KVS_DECODE_BIN, "--listen", "127.0.0.1:0", "--model", ModelPath(), "--threads", "1"}, server_tls),
        TempDir() + "/decode.log");
    ASSERT_TRUE(d.ok()) << d.status();
    decode_ = d->release();
    absl::StatusOr<std::unique_ptr<DaemonProcess>> p = DaemonProcess::Start(
        Concat(Concat({KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode", decode_->grpc(), "--model",
                       ModelPath(), "--threads", "1"},
                      server_tls),
               {"--decode-tls-ca", certs_->ca, "--decode-tls-cert", certs_->client_cert, "--decode-tls-key",
                certs_->client_key, "--decode-tls-server-name", "localhost"}),
        TempDir() + "/prefill.log");
    ASSERT_TRUE(p.ok()) << p.status();
    prefill_ = p->release();
  }
  static void TearDownTestSuite() {
    delete prefill_;
    delete decode_;
    delete certs_;
    prefill_ = nullptr;
    decode_ = nullptr;
    certs_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(prefill_, nullptr) << "the daemons did not start"; }
  void TearDown() override {
    if (HasFailure() && prefill_ != nullptr) {
      std::cerr << "--- decode log:\n" << decode_->Log() << "\n--- prefill log:\n" << prefill_->Log();
    }
  }
  static control::TlsOptions ClientTls(bool with_cert) {
    control::TlsOptions t;
    t.ca_file = certs_->ca;
    if (with_cert) {
      t.cert_file = certs_->client_cert;
      t.key_file = certs_->client_key;
    }
    return t;
  }

  static TlsCerts* certs_;
  static DaemonProcess* decode_;
  static DaemonProcess* prefill_;
};
TlsCerts* DaemonsTls::certs_ = nullptr;
DaemonProcess* DaemonsTls::decode_ = nullptr;
DaemonProcess* DaemonsTls::prefill_ = nullptr;

TEST_F(DaemonsTls, GeneratesOverMutualTls) {
  KVS_ASSERT_OK_AND_ASSIGN(std::shared_ptr<grpc::Channel> channel,
                           control::MakeChannel(prefill_->grpc(), ClientTls(true)));
  control::GrpcPrefillClient client(channel, prefill_->grpc());
  std::string text;
  KVS_ASSERT_OK_AND_ASSIGN(control::RequestStats stats, Generate(client, &text));
  EXPECT_GT(stats.generated_tokens, 0);
  EXPECT_FALSE(text.empty());
  // The handoff went to decode over mTLS (decode admits no client without a certificate).
  EXPECT_THAT(prefill_->Log(), HasSubstr(absl::StrCat("decode peers ", decode_->grpc(), " (mtls)")));
}

TEST_F(DaemonsTls, ClientWithoutCertificateIsRefused) {
  KVS_ASSERT_OK_AND_ASSIGN(std::shared_ptr<grpc::Channel> channel,
                           control::MakeChannel(prefill_->grpc(), ClientTls(false)));
  control::GrpcPrefillClient client(channel, prefill_->grpc());
  std::string text;
  absl::StatusOr<control::RequestStats> r = Generate(client, &text);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  control::GrpcPrefillClient insecure(control::MakeChannel(prefill_->grpc()), prefill_->grpc());
  EXPECT_THAT(Generate(insecure, &text).status(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST_F(DaemonsTls, HealthProbesWithTlsFlags) {
  const std::vector<std::string> mtls = {"--tls-ca", certs_->ca, "--tls-cert", certs_->client_cert, "--tls-key",
                                         certs_->client_key};
  for (DaemonProcess* d : {decode_, prefill_}) {
    ProcessResult ok = RunProcess(Concat(Concat({KVS_HEALTH_BIN, "--timeout-ms", "10000"}, mtls), {d->grpc()}));
    EXPECT_EQ(ok.exit_code, 0) << ok.err;
    EXPECT_THAT(ok.out, HasSubstr("SERVING"));
    // No certificate, or no TLS at all: not healthy (exit 1), and says why.
    ProcessResult no_cert =
        RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "1000", "--tls-ca", certs_->ca, d->grpc()});
    EXPECT_EQ(no_cert.exit_code, 1) << no_cert.out;
    EXPECT_THAT(no_cert.err, HasSubstr("TLS handshake"));
    ProcessResult plain = RunProcess({KVS_HEALTH_BIN, "--timeout-ms", "1000", d->grpc()});
    EXPECT_EQ(plain.exit_code, 1) << plain.out;
  }
  ProcessResult bad = RunProcess({KVS_HEALTH_BIN, "--tls-ca", TempDir() + "/missing-ca.pem", decode_->grpc()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("missing-ca.pem"));
}

TEST_F(DaemonsTls, LoadgenWithTlsFlags) {
  ProcessResult r = RunProcess({KVS_LOADGEN_BIN, "--target", prefill_->grpc(), "--requests", "2", "--concurrency",
                                "1", "--max-new-tokens", "4", "--progress=false", "--tls-ca", certs_->ca,
                                "--tls-cert", certs_->client_cert, "--tls-key", certs_->client_key});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("identity"));
}

TEST_F(DaemonsTls, PrefillWithoutClientCertificateCannotReachDecode) {
  // A second kvs-prefill that trusts decode's CA but has no certificate: decode refuses it, so a
  // request fails (UNAVAILABLE) instead of being served.
  KVS_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<DaemonProcess> p,
      DaemonProcess::Start({KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode", decode_->grpc(), "--model",
                            ModelPath(), "--threads", "1", "--connect-timeout-ms", "500", "--decode-tls-ca",
                            certs_->ca},
                           TempDir() + "/prefill-nocert.log"));
  control::GrpcPrefillClient client(control::MakeChannel(p->grpc()), p->grpc());
  std::string text;
  EXPECT_THAT(Generate(client, &text).status(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_))
      << p->Log();
}

TEST(DaemonsTlsConfig, BadTlsFilesExitWithClearErrors) {
  const std::string missing = TempDir() + "/no-such-cert.pem";
  ProcessResult d = RunProcess({KVS_DECODE_BIN, "--listen", "127.0.0.1:0", "--model", ModelPath(), "--tls-cert",
                                missing, "--tls-key", missing});
  EXPECT_EQ(d.exit_code, 2);
  EXPECT_THAT(d.err, HasSubstr(missing));
  ProcessResult half = RunProcess({KVS_DECODE_BIN, "--model", ModelPath(), "--tls-cert", missing});
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_THAT(half.err, HasSubstr("tls_cert and tls_key"));
  ProcessResult p = RunProcess({KVS_PREFILL_BIN, "--listen", "127.0.0.1:0", "--decode", "127.0.0.1:1", "--model",
                                ModelPath(), "--decode-tls-ca", missing});
  EXPECT_EQ(p.exit_code, 2);
  EXPECT_THAT(p.err, HasSubstr("decode_tls"));
  EXPECT_THAT(p.err, HasSubstr(missing));
  ProcessResult l = RunProcess({KVS_LOADGEN_BIN, "--target", "127.0.0.1:1", "--tls-ca", missing});
  EXPECT_EQ(l.exit_code, 2);
  EXPECT_THAT(l.err, HasSubstr(missing));
}

}  // namespace
}  // namespace kvs::testing
