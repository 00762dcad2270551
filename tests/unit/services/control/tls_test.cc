// TLS and mTLS on the control plane: a real GrpcServer (port 0) with control::TlsOptions and
// channels from control::MakeChannel(target, tls), probed with grpc.health.v1 Check. The
// certificates are made at test time with the openssl command (tests/testing/tls_certs.h).
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/control/grpc_server.h"
#include "services/control/tls.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tls_certs.h"

namespace kvs::control {
namespace {

using ::kvs::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// grpc.health.v1 Check of "" over `channel`. `wait` = wait for the channel to connect (success
// cases: the first connect may take a moment); failure cases do not wait, so a refused handshake
// returns UNAVAILABLE at once instead of retrying until the deadline.
grpc::Status Check(const std::shared_ptr<grpc::Channel>& channel, bool wait) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  ctx.set_wait_for_ready(wait);
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (s.ok() && resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "not SERVING");
  }
  return s;
}

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/kvs_tls_", getpid()));
    absl::StatusOr<kvs::testing::TlsCerts> c = kvs::testing::MakeTlsCerts(*dir_);
    ASSERT_TRUE(c.ok()) << c.status();
    certs_ = new kvs::testing::TlsCerts(*std::move(c));
  }
  static void TearDownTestSuite() {
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete certs_;
    delete dir_;
    certs_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(certs_, nullptr) << "certificates could not be made"; }

  static TlsOptions ServerTls(bool require_client_cert) {
    TlsOptions t;
    t.cert_file = certs_->server_cert;
    t.key_file = certs_->server_key;
    if (require_client_cert) t.ca_file = certs_->ca;
    t.require_client_cert = require_client_cert;
    return t;
  }
  static TlsOptions ClientTls(bool with_cert) {
    TlsOptions t;
    t.ca_file = certs_->ca;
    if (with_cert) {
      t.cert_file = certs_->client_cert;
      t.key_file = certs_->client_key;
    }
    return t;
  }
  static std::unique_ptr<GrpcServer> StartServer(const TlsOptions& tls) {
    GrpcServerOptions o;
    o.tls = tls;
    absl::StatusOr<std::unique_ptr<GrpcServer>> s = GrpcServer::Start("127.0.0.1:0", {}, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  static std::shared_ptr<grpc::Channel> Channel(const std::string& target, const TlsOptions& tls) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> c = MakeChannel(target, tls);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }
  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(*dir_, "/", name);
    std::ofstream(path) << text;
    return path;
  }

  static std::string* dir_;
  static kvs::testing::TlsCerts* certs_;
};
std::string* Tls::dir_ = nullptr;
kvs::testing::TlsCerts* Tls::certs_ = nullptr;

TEST_F(Tls, ServerServesTlsClient) {
  std::unique_ptr<GrpcServer> server = StartServer(ServerTls(false));
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(Check(Channel(server->address(), ClientTls(false)), true).ok());
  // By name: the certificate lists localhost too.
  EXPECT_TRUE(Check(Channel(absl::StrCat("localhost:", server->port()), ClientTls(false)), true).ok());
  EXPECT_EQ(ServerTls(false).DescribeServer(), "tls");
  EXPECT_EQ(ClientTls(false).DescribeClient(), "tls");
}

TEST_F(Tls, InsecureClientFailsAgainstTlsServer) {
  std::unique_ptr<GrpcServer> server = StartServer(ServerTls(false));
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Check(MakeChannel(server->address()), false).error_code(), grpc::StatusCode::UNAVAILABLE);
  // And the insecure options are what an empty TlsOptions gives.
  EXPECT_EQ(Check(Channel(server->address(), TlsOptions{}), false).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(TlsOptions{}.DescribeClient(), "insecure");
}

TEST_F(Tls, TlsClientFailsAgainstInsecureServer) {
  std::unique_ptr<GrpcServer> server = StartServer(TlsOptions{});
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(Check(MakeChannel(server->address()), true).ok());
  EXPECT_EQ(Check(Channel(server->address(), ClientTls(false)), false).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, WrongCaFails) {
  std::unique_ptr<GrpcServer> server = StartServer(ServerTls(false));
  ASSERT_NE(server, nullptr);
  TlsOptions t;
  t.ca_file = certs_->other_ca;
  EXPECT_EQ(Check(Channel(server->address(), t), false).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, ServerNameIsVerified) {
  std::unique_ptr<GrpcServer> server = StartServer(ServerTls(false));
  ASSERT_NE(server, nullptr);
  TlsOptions t = ClientTls(false);
  t.server_name_override = "localhost";  // listed: fine
  EXPECT_TRUE(Check(Channel(server->address(), t), true).ok());
  t.server_name_override = "decode.example.com";  // not in the certificate
  EXPECT_EQ(Check(Channel(server->address(), t), false).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Tls, MutualTlsRequiresClientCertificate) {
  std::unique_ptr<GrpcServer> server = StartServer(ServerTls(true));
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(ServerTls(true).DescribeServer(), "mtls");
  // Without a certificate: refused.
  EXPECT_NE(Check(Channel(server->address(), ClientTls(false)), false).error_code(), grpc::StatusCode::OK);
  // A certificate from another CA: refused.
  TlsOptions intruder = ClientTls(false);
  intruder.cert_file = certs_->other_client_cert;
  intruder.key_file = certs_->other_client_key;
  EXPECT_NE(Check(Channel(server->address(), intruder), false).error_code(), grpc::StatusCode::OK);
  // With the CA's client certificate: served.
  EXPECT_EQ(ClientTls(true).DescribeClient(), "mtls");
  EXPECT_TRUE(Check(Channel(server->address(), ClientTls(true)), true).ok());
}

TEST_F(Tls, OptionalClientCertificateIsVerifiedWhenPresented) {
  // CA set, client certificates not required: a client without one is served, a client with one
  // from another CA is refused.
  TlsOptions st = ServerTls(false);
  st.ca_file = certs_->ca;
  std::unique_ptr<GrpcServer> server = StartServer(st);
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(Check(Channel(server->address(), ClientTls(false)), true).ok());
  EXPECT_TRUE(Check(Channel(server->address(), ClientTls(true)), true).ok());
  TlsOptions intruder = ClientTls(false);
  intruder.cert_file = certs_->other_client_cert;
  intruder.key_file = certs_->other_client_key;
  EXPECT_NE(Check(Channel(server->address(), intruder), false).error_code(), grpc::StatusCode::OK);
}

TEST_F(Tls, BadFilesAreClearErrors) {
  const std::string missing = absl::StrCat(*dir_, "/no-such.pem");
  const std::string garbage = WriteFile("garbage.pem", "this is not PEM\n");
  const std::string truncated = WriteFile("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");

  TlsOptions t = ServerTls(false);
  t.cert_file = missing;
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(missing), HasSubstr("cannot read"))));
  // GrpcServer::Start reports the same error instead of starting insecure.
  GrpcServerOptions so;
  so.tls = t;
  EXPECT_THAT(GrpcServer::Start("127.0.0.1:0", {}, so).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(missing)));

  t = ServerTls(false);
  t.key_file = missing;
  EXPECT_THAT(MakeServerCredentials(t).status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(missing)));
  t = ServerTls(false);
  t.cert_file = garbage;
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(garbage), HasSubstr("not a PEM certificate"))));
  t = ServerTls(false);
  t.cert_file = truncated;
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(truncated)));
  t = ServerTls(false);
  t.key_file = garbage;
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(garbage), HasSubstr("private key"))));
  t = ServerTls(false);
  t.key_file = certs_->client_key;  // a valid key, not the certificate's
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not match certificate")));
  t = ServerTls(true);
  t.ca_file = garbage;
  EXPECT_THAT(MakeServerCredentials(t).status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(garbage)));

  // Client side: the channel is refused before any connection.
  TlsOptions c = ClientTls(false);
  c.ca_file = missing;
  EXPECT_THAT(MakeChannel("127.0.0.1:1", c).status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(missing)));
  c = ClientTls(true);
  c.cert_file = garbage;
  EXPECT_THAT(MakeChannel("127.0.0.1:1", c).status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(garbage)));
}

TEST_F(Tls, InconsistentOptionsAreErrors) {
  TlsOptions t = ServerTls(false);
  t.key_file.clear();
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs its private key")));
  t = ServerTls(false);
  t.cert_file.clear();
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs its certificate")));
  t = ServerTls(false);
  t.require_client_cert = true;  // no CA to verify with
  EXPECT_THAT(MakeServerCredentials(t).status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CA file")));
  t = TlsOptions{};
  t.require_client_cert = true;  // no certificate of its own
  EXPECT_THAT(MakeServerCredentials(t).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("own certificate")));
  TlsOptions c = ClientTls(true);
  c.key_file.clear();
  EXPECT_THAT(MakeChannelCredentials(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs its private key")));
}

}  // namespace
}  // namespace kvs::control
