#include "services/control/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvs::control {
namespace {

// RAII for the OpenSSL objects used to check the files.
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

// The oldest queued OpenSSL error as text (and the queue cleared), for messages.
std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

absl::StatusOr<std::string> ReadFile(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("TLS ", what, " '", path, "': cannot read (", std::strerror(errno), ")"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("TLS ", what, " '", path, "': read error"));
  return ss.str();
}

Bio MemBio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); }

// Every certificate of a PEM file; at least one.
absl::StatusOr<std::vector<Cert>> ParseCerts(const std::string& what, const std::string& path, const std::string& pem) {
  std::vector<Cert> certs;
  Bio bio = MemBio(pem);
  ERR_clear_error();
  while (true) {
    Cert c(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (c == nullptr) break;
    certs.push_back(std::move(c));
  }
  // Reading past the last certificate queues "no start line"; anything else is a broken one.
  const unsigned long e = ERR_peek_last_error();
  const bool clean_end = e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
  if (certs.empty() || !clean_end) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS ", what, " '", path, "': not a PEM certificate (", OpenSslError(), ")"));
  }
  ERR_clear_error();
  return certs;
}

struct Material {
  std::string cert_pem, key_pem, ca_pem;
};

// Reads and checks the files named by `tls` (those that are set).
absl::StatusOr<Material> LoadMaterial(const TlsOptions& tls) {
  Material m;
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        tls.cert_file.empty()
            ? absl::StrCat("TLS: a private key ('", tls.key_file, "') needs its certificate (cert file unset)")
            : absl::StrCat("TLS: certificate '", tls.cert_file, "' needs its private key (key file unset)"));
  }
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile("certificate", tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile("private key", tls.key_file);
    if (!key.ok()) return key.status();
    absl::StatusOr<std::vector<Cert>> certs = ParseCerts("certificate", tls.cert_file, *cert);
    if (!certs.ok()) return certs.status();
    Bio bio = MemBio(*key);
    ERR_clear_error();
    Key pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>("")));
    if (pkey == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("TLS private key '", tls.key_file,
                                                     "': not an unencrypted PEM private key (", OpenSslError(), ")"));
    }
    if (X509_check_private_key(certs->front().get(), pkey.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("TLS private key '", tls.key_file,
                                                     "' does not match certificate '", tls.cert_file, "'"));
    }
    m.cert_pem = *std::move(cert);
    m.key_pem = *std::move(key);
  }
  if (!tls.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile("CA file", tls.ca_file);
    if (!ca.ok()) return ca.status();
    absl::StatusOr<std::vector<Cert>> certs = ParseCerts("CA file", tls.ca_file, *ca);
    if (!certs.ok()) return certs.status();
    m.ca_pem = *std::move(ca);
  }
  return m;
}

}  // namespace

std::string TlsOptions::DescribeServer() const {
  if (!ServerEnabled()) return "insecure";
  return require_client_cert ? "mtls" : "tls";
}

std::string TlsOptions::DescribeClient() const {
  if (!ClientEnabled()) return "insecure";
  return cert_file.empty() ? "tls" : "mtls";
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsOptions& tls) {
  if (!tls.ServerEnabled()) {
    if (!tls.ca_file.empty() || tls.require_client_cert) {
      return absl::InvalidArgumentError(
          "TLS: a server with a CA file or require_client_cert needs its own certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.require_client_cert && tls.ca_file.empty()) {
    return absl::InvalidArgumentError("TLS: require_client_cert needs a CA file to verify client certificates");
  }
  absl::StatusOr<Material> m = LoadMaterial(tls);
  if (!m.ok()) return m.status();
  grpc_ssl_client_certificate_request_type request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  if (tls.require_client_cert) {
    request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else if (!m->ca_pem.empty()) {
    request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;  // verified when presented
  }
  grpc::SslServerCredentialsOptions opts(request);
  opts.pem_root_certs = m->ca_pem;
  opts.pem_key_cert_pairs.push_back({m->key_pem, m->cert_pem});
  return grpc::SslServerCredentials(opts);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsOptions& tls) {
  if (tls.require_client_cert) {
    return absl::InvalidArgumentError("TLS: require_client_cert is a server option");
  }
  if (!tls.ClientEnabled()) return grpc::InsecureChannelCredentials();
  absl::StatusOr<Material> m = LoadMaterial(tls);
  if (!m.ok()) return m.status();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = m->ca_pem;  // empty: the system's roots
  opts.pem_private_key = m->key_pem;
  opts.pem_cert_chain = m->cert_pem;
  return grpc::SslCredentials(opts);
}

}  // namespace kvs::control
