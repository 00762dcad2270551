// tests/testing/tls_certs.h — throwaway TLS material for tests, made at test time with the
// `openssl` command (the same commands deploy/README.md's TLS section documents): a CA, a server
// certificate for localhost / 127.0.0.1 and a client certificate signed by it, plus a second,
// unrelated CA with its own client certificate (for "wrong CA" cases). Header-only.
//
//   KVS_ASSERT_OK_AND_ASSIGN(TlsCerts c, MakeTlsCerts(dir));
//   control::TlsOptions server{c.server_cert, c.server_key, c.ca, true};
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kvs::testing {

struct TlsCerts {
  std::string dir;
  std::string ca, ca_key;                 // the CA both certificates below chain to
  std::string server_cert, server_key;    // SAN DNS:localhost, IP:127.0.0.1
  std::string client_cert, client_key;    // CN kvs-test-client
  std::string other_ca;                   // an unrelated CA
  std::string other_client_cert, other_client_key;  // signed by other_ca
};

namespace tls_certs_internal {

inline absl::Status Sh(const std::string& cmd, const std::string& log) {
  const std::string full = absl::StrCat(cmd, " >>'", log, "' 2>&1");
  const int rc = std::system(full.c_str());
  if (rc != 0) {
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return absl::InternalError(absl::StrCat("`", cmd, "` failed (status ", rc, "):\n", text));
  }
  return absl::OkStatus();
}

// A CA: <name>.pem + <name>.key.
inline absl::Status MakeCa(const std::string& dir, const std::string& name, const std::string& log) {
  return Sh(absl::StrCat("cd '", dir, "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 ",
                         "-nodes -days 2 -subj '/CN=", name, "' -keyout ", name, ".key -out ", name, ".pem"),
            log);
}

// <name>.pem + <name>.key signed by <ca>, with `ext` (an extension line or "").
inline absl::Status MakeLeaf(const std::string& dir, const std::string& name, const std::string& cn,
                             const std::string& ca, const std::string& ext, const std::string& log) {
  absl::Status s = Sh(absl::StrCat("cd '", dir, "' && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 ",
                                   "-nodes -subj '/CN=", cn, "' -keyout ", name, ".key -out ", name, ".csr"),
                      log);
  if (!s.ok()) return s;
  {
    std::ofstream e(absl::StrCat(dir, "/", name, ".ext"));
    e << ext << "\n";
  }
  return Sh(absl::StrCat("cd '", dir, "' && openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
                         ".key -CAcreateserial -days 2 -extfile ", name, ".ext -out ", name, ".pem"),
            log);
}

}  // namespace tls_certs_internal

inline absl::StatusOr<TlsCerts> MakeTlsCerts(const std::string& dir) {
  namespace tc = tls_certs_internal;
  std::filesystem::create_directories(dir);
  const std::string log = dir + "/openssl.log";
  if (absl::Status s = tc::Sh("openssl version", log); !s.ok()) return s;
  for (const char* ca : {"ca", "other_ca"}) {
    if (absl::Status s = tc::MakeCa(dir, ca, log); !s.ok()) return s;
  }
  if (absl::Status s = tc::MakeLeaf(dir, "server", "localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1", log);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = tc::MakeLeaf(dir, "client", "kvs-test-client", "ca", "extendedKeyUsage=clientAuth", log);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          tc::MakeLeaf(dir, "other_client", "kvs-test-intruder", "other_ca", "extendedKeyUsage=clientAuth", log);
      !s.ok()) {
    return s;
  }
  TlsCerts c;
  c.dir = dir;
  auto f = [&](const std::string& n) { return absl::StrCat(dir, "/", n); };
  c.ca = f("ca.pem");
  c.ca_key = f("ca.key");
  c.server_cert = f("server.pem");
  c.server_key = f("server.key");
  c.client_cert = f("client.pem");
  c.client_key = f("client.key");
  c.other_ca = f("other_ca.pem");
  c.other_client_cert = f("other_client.pem");
  c.other_client_key = f("other_client.key");
  return c;
}

}  // namespace kvs::testing
