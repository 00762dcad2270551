// services/transfer/tcp/tcp_transport.h — the reference data plane over plain TCP (always built).
//
// One or more parallel TCP connections ("streams") per peer; each stream has a writer thread
// (sendmsg of header + payload as one iovec pair, MSG_NOSIGNAL) and a reader thread (header, then
// the checks, then the payload straight into a pool buffer). Frames are spread over the streams
// by whichever writer is free, so they may arrive out of order; the pipeline writes each chunk
// at its own offset and does not care. TCP_NODELAY, large socket buffers, keepalive and
// TCP_USER_TIMEOUT (peer loss on a silent network) are set on every socket.
//
//   auto t = kvs::transfer::CreateTcpTransport({.streams = 2});
//   KVS_ASSIGN_OR_RETURN(auto l, t->Listen());   // l->endpoint() == "127.0.0.1:40123"
//
// Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "services/transfer/transport.h"

namespace kvs::transfer {

struct TcpTransportOptions {
  // Parallel TCP connections per peer (1..64). The connecting side decides; the listener takes
  // what the peer opens.
  int streams = 1;
  // Address to listen on and the host part of Listener::endpoint() (default: loopback).
  std::string bind_host = "127.0.0.1";
  // Host a peer should dial when it differs from bind_host (e.g. bind 0.0.0.0); empty = bind_host.
  std::string advertise_host;
  // SO_SNDBUF / SO_RCVBUF per socket in bytes; 0 leaves the kernel's auto-tuning on. The
  // kernel caps the value at net.core.{w,r}mem_max.
  int socket_buffer_bytes = 0;
  // TCP_USER_TIMEOUT: unacknowledged data older than this fails the connection (0 = kernel default).
  int user_timeout_ms = 10000;
};

std::unique_ptr<Transport> CreateTcpTransport(const TcpTransportOptions& options = {});

}  // namespace kvs::transfer
