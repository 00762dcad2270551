// services/control/tls.h — TLS and mutual TLS for kvshuttle's gRPC control plane.
//
// One options struct for both ends; the files are PEM. Insecure is the default: a server uses TLS
// when it has a certificate, a client when any TLS field is set.
//
//   control::TlsOptions server_tls{"server.pem", "server.key", "ca.pem", /*require_client_cert=*/true};
//   control::GrpcServerOptions so;  so.tls = server_tls;            // GrpcServer::Start uses it
//   control::TlsOptions client_tls{"client.pem", "client.key", "ca.pem"};
//   KVS_ASSIGN_OR_RETURN(auto channel, control::MakeChannel("10.0.0.2:50052", client_tls));
//
// Server: cert_file + key_file (both or neither) are its identity; with ca_file, client
// certificates presented are verified against it; require_client_cert (needs ca_file) refuses
// clients without a valid certificate (mTLS). Client: ca_file verifies the server (empty = the
// system's roots); cert_file + key_file (both or neither) are presented for mTLS;
// server_name_override is the name checked against the server's certificate instead of the
// target's host (e.g. when dialling an IP address the certificate does not list).
//
// Every file is read and checked (parses as PEM, key matches certificate) when credentials are
// built: a missing, unreadable or invalid file is INVALID_ARGUMENT naming the file — at start-up,
// not at the first handshake. Thread-safety: plain functions over values.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace kvs::control {

struct TlsOptions {
  std::string cert_file;  // PEM certificate chain (own identity)
  std::string key_file;   // PEM private key of cert_file (unencrypted)
  std::string ca_file;    // PEM CA certificates that verify the peer
  bool require_client_cert = false;   // server only: mTLS
  std::string server_name_override;   // client only

  // Whether a server with these options uses TLS (it has a certificate or key).
  bool ServerEnabled() const { return !cert_file.empty() || !key_file.empty(); }
  // Whether a client with these options uses TLS (any field set).
  bool ClientEnabled() const {
    return !cert_file.empty() || !key_file.empty() || !ca_file.empty() || !server_name_override.empty();
  }
  // "insecure", "tls" or "mtls", for logs.
  std::string DescribeServer() const;
  std::string DescribeClient() const;
};

// Insecure credentials when !ServerEnabled(); else SSL credentials from the checked files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsOptions& tls);
// Insecure credentials when !ClientEnabled(); else SSL credentials from the checked files
// (server_name_override is a channel argument: see MakeChannel).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsOptions& tls);

}  // namespace kvs::control
