#include "services/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/testing/status_matchers.h"

#define KVS_TEST_METRICS(COUNTER, GAUGE, HISTOGRAM)                        \
  COUNTER(kvs_test_requests_total, "requests by codec")                    \
  GAUGE(kvs_test_sessions_active, "sessions holding a lease")              \
  HISTOGRAM(kvs_test_handoff_seconds, "handoff time", ::kvs::metrics::LatencyBuckets())

namespace kvs::metrics {
namespace {

KVS_METRICS_STRUCT(TestMetrics, KVS_TEST_METRICS);

using ::kvs::testing::IsOk;
using ::kvs::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Metrics, StructBindsEveryFamilyToTheInjectedRegistry) {
  Registry r;
  TestMetrics m(r);
  m.kvs_test_requests_total.With({{"codec", "identity"}}).Increment();
  m.kvs_test_requests_total.With({{"codec", "identity"}}).Increment();
  m.kvs_test_requests_total.With({{"codec", "uniform_int8"}}).Increment(3);
  m.kvs_test_sessions_active.With().Set(2);
  m.kvs_test_handoff_seconds.With({{"codec", "identity"}}).Observe(0.003);
  std::string text = r.Serialize();
  EXPECT_THAT(text, HasSubstr("kvs_test_requests_total{codec=\"identity\"} 2"));
  EXPECT_THAT(text, HasSubstr("kvs_test_requests_total{codec=\"uniform_int8\"} 3"));
  EXPECT_THAT(text, HasSubstr("kvs_test_sessions_active 2"));
  EXPECT_THAT(text, HasSubstr("kvs_test_handoff_seconds_count{codec=\"identity\"} 1"));
  EXPECT_THAT(CheckExpositionFormat(text), IsOk());
}

TEST(Metrics, TwoRegistriesAreIndependent) {
  Registry a, b;
  TestMetrics ma(a), mb(b);
  ma.kvs_test_sessions_active.With().Set(5);
  mb.kvs_test_sessions_active.With().Set(1);
  EXPECT_THAT(a.Serialize(), HasSubstr("kvs_test_sessions_active 5"));
  EXPECT_THAT(b.Serialize(), HasSubstr("kvs_test_sessions_active 1"));
}

TEST(CheckExpositionFormat, RejectsMalformedText) {
  EXPECT_THAT(CheckExpositionFormat("# TYPE x counter\nx 1\n"), IsOk());
  EXPECT_THAT(CheckExpositionFormat("x 1"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("newline")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE x counter\n9x 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad metric name")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE x counter\nx{a=\"1} 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE x counter\nx one\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad sample value")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE x wat\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown type")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE h histogram\nh_bucket 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without le")));
  EXPECT_THAT(CheckExpositionFormat("# TYPE x counter\n# TYPE y gauge\nx 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside its family")));
}

// Fetches http://127.0.0.1:port/metrics with a plain socket (HTTP/1.0, connection close).
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)::write(fd, req.data(), req.size());
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return resp;
}

TEST(MetricsServer, ServesTheRegistryOnAnEphemeralPort) {
  Registry r;
  TestMetrics m(r);
  m.kvs_test_requests_total.With({{"codec", "cachegen"}}).Increment();
  KVS_ASSERT_OK_AND_ASSIGN(auto server, MetricsServer::Start("127.0.0.1", 0, r));
  ASSERT_GT(server->port(), 0);
  std::string resp = HttpGet(server->port(), "/metrics");
  EXPECT_THAT(resp, HasSubstr("200 OK"));
  size_t body = resp.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos);
  std::string text = resp.substr(body + 4);
  EXPECT_THAT(text, HasSubstr("kvs_test_requests_total{codec=\"cachegen\"} 1"));
  EXPECT_THAT(CheckExpositionFormat(text), IsOk());
}

TEST(MetricsServer, BusyPortIsUnavailable) {
  Registry r;
  KVS_ASSERT_OK_AND_ASSIGN(auto first, MetricsServer::Start("127.0.0.1", 0, r));
  EXPECT_THAT(MetricsServer::Start("127.0.0.1", first->port(), r),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot listen")));
}

}  // namespace
}  // namespace kvs::metrics
