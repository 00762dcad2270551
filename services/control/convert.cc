#include "services/control/convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"

namespace kvs::control {
namespace {

constexpr size_t kMaxIdBytes = 256;

absl::Status CheckId(const std::string& id, absl::string_view field) {
  if (id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is ", id.size(), " bytes; at most ", kMaxIdBytes));
  }
  return absl::OkStatus();
}

}  // namespace

pb::KvGeometry ToProto(const KvGeometry& g) {
  pb::KvGeometry p;
  p.set_layers(g.layers);
  p.set_kv_heads(g.heads);
  p.set_tokens(g.tokens);
  p.set_head_dim(g.head_dim);
  return p;
}

KvGeometry FromProto(const pb::KvGeometry& g) {
  return KvGeometry{g.layers(), g.kv_heads(), g.tokens(), g.head_dim()};
}

pb::Sampling ToProto(const SamplingParams& s) {
  pb::Sampling p;
  p.set_temperature(s.temperature);
  p.set_seed(s.seed);
  p.set_top_p(s.top_p);
  return p;
}

SamplingParams FromProto(const pb::Sampling& s) {
  return SamplingParams{s.temperature(), s.seed(), s.top_p()};
}

pb::Transport ToProto(TransportKind t) {
  switch (t) {
    case TransportKind::kTcp:
      return pb::TRANSPORT_TCP;
    case TransportKind::kUcx:
      return pb::TRANSPORT_UCX;
    case TransportKind::kUnspecified:
      break;
  }
  return pb::TRANSPORT_UNSPECIFIED;
}

absl::StatusOr<TransportKind> FromProto(pb::Transport t) {
  switch (t) {
    case pb::TRANSPORT_UNSPECIFIED:
      return TransportKind::kUnspecified;
    case pb::TRANSPORT_TCP:
      return TransportKind::kTcp;
    case pb::TRANSPORT_UCX:
      return TransportKind::kUcx;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown transport enum value ", static_cast<int>(t)));
}

pb::DType ToProto(DType d) { return d == DType::kBF16 ? pb::DTYPE_BF16 : pb::DTYPE_F16; }

absl::StatusOr<DType> FromProto(pb::DType d) {
  switch (d) {
    case pb::DTYPE_UNSPECIFIED:
    case pb::DTYPE_F16:
      return DType::kF16;
    case pb::DTYPE_BF16:
      return DType::kBF16;
    default:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype enum value ", static_cast<int>(d)));
}

void ToProto(const RequestStats& s, pb::RequestStats* o) {
  o->set_request_id(s.request_id);
  o->set_codec(s.codec);
  o->set_codec_reason(s.codec_reason);
  o->set_transport(s.transport);
  o->set_pipelined(s.pipelined);
  o->set_layer_pipelined(s.layer_pipelined);
  o->set_prompt_tokens(s.prompt_tokens);
  o->set_generated_tokens(s.generated_tokens);
  o->set_tokenize_ms(s.tokenize_ms);
  o->set_prefill_ms(s.prefill_ms);
  o->set_encode_ms(s.encode_ms);
  o->set_queue_ms(s.queue_ms);
  o->set_wire_ms(s.wire_ms);
  o->set_decompress_ms(s.decompress_ms);
  o->set_handoff_ms(s.handoff_ms);
  o->set_ttft_ms(s.ttft_ms);
  o->set_time_to_second_token_ms(s.time_to_second_token_ms);
  o->set_tpot_ms(s.tpot_ms);
  o->set_total_ms(s.total_ms);
  o->set_raw_bytes(s.raw_bytes);
  o->set_wire_bytes(s.wire_bytes);
  o->set_ratio(s.ratio);
  o->set_chunks(s.chunks);
  o->set_link_gbps(s.link_gbps);
  o->set_predicted_handoff_ms(s.predicted_handoff_ms);
  o->set_predicted_serial_ms(s.predicted_serial_ms);
  o->set_decode_peer(s.decode_peer);
  o->set_finish_reason(s.finish_reason);
}

RequestStats FromProto(const pb::RequestStats& o) {
  RequestStats s;
  s.request_id = o.request_id();
  s.codec = o.codec();
  s.codec_reason = o.codec_reason();
  s.transport = o.transport();
  s.pipelined = o.pipelined();
  s.layer_pipelined = o.layer_pipelined();
  s.prompt_tokens = o.prompt_tokens();
  s.generated_tokens = o.generated_tokens();
  s.tokenize_ms = o.tokenize_ms();
  s.prefill_ms = o.prefill_ms();
  s.encode_ms = o.encode_ms();
  s.queue_ms = o.queue_ms();
  s.wire_ms = o.wire_ms();
  s.decompress_ms = o.decompress_ms();
  s.handoff_ms = o.handoff_ms();
  s.ttft_ms = o.ttft_ms();
  s.time_to_second_token_ms = o.time_to_second_token_ms();
  s.tpot_ms = o.tpot_ms();
  s.total_ms = o.total_ms();
  s.raw_bytes = o.raw_bytes();
  s.wire_bytes = o.wire_bytes();
  s.ratio = o.ratio();
  s.chunks = o.chunks();
  s.link_gbps = o.link_gbps();
  s.predicted_handoff_ms = o.predicted_handoff_ms();
  s.predicted_serial_ms = o.predicted_serial_ms();
  s.decode_peer = o.decode_peer();
  s.finish_reason = o.finish_reason();
  return s;
}

void ToProto(const TokenPiece& t, pb::TokenPiece* out) {
  out->set_token_id(t.token_id);
  out->set_text(t.text);
  out->set_index(t.index);
}

TokenPiece FromProto(const pb::TokenPiece& t) { return TokenPiece{t.token_id(), t.text(), t.index()}; }

void ToProto(const ServerInfo& i, pb::InfoResponse* o) {
  o->set_role(i.role);
  o->set_model_name(i.model_name);
  o->set_model_fingerprint(i.model_fingerprint);
  o->set_layers(i.layers);
  o->set_kv_heads(i.kv_heads);
  o->set_head_dim(i.head_dim);
  o->set_max_context(i.max_context);
  o->set_vocab_size(i.vocab_size);
  for (const std::string& c : i.codecs) o->add_codecs(c);
  for (const std::string& t : i.transports) o->add_transports(t);
  o->set_default_codec(i.default_codec);
  o->set_default_transport(i.default_transport);
  o->set_version(i.version);
  o->set_frame_version(i.frame_version);
  for (const std::string& p : i.decode_peers) o->add_decode_peers(p);
  o->set_max_new_tokens_limit(i.max_new_tokens_limit);
  o->set_max_prompt_tokens(i.max_prompt_tokens);
}

ServerInfo FromProto(const pb::InfoResponse& o) {
  ServerInfo i;
  i.role = o.role();
  i.model_name = o.model_name();
  i.model_fingerprint = o.model_fingerprint();
  i.layers = o.layers();
  i.kv_heads = o.kv_heads();
  i.head_dim = o.head_dim();
  i.max_context = o.max_context();
  i.vocab_size = o.vocab_size();
  i.codecs.assign(o.codecs().begin(), o.codecs().end());
  i.transports.assign(o.transports().begin(), o.transports().end());
  i.default_codec = o.default_codec();
  i.default_transport = o.default_transport();
  i.version = o.version();
  i.frame_version = o.frame_version();
  i.decode_peers.assign(o.decode_peers().begin(), o.decode_peers().end());
  i.max_new_tokens_limit = o.max_new_tokens_limit();
  i.max_prompt_tokens = o.max_prompt_tokens();
  return i;
}

void ToProto(const GenerateParams& p, pb::GenerateRequest* r) {
  r->set_request_id(p.request_id);
  r->set_prompt(p.prompt);
  for (int32_t t : p.prompt_token_ids) r->add_prompt_token_ids(t);
  r->set_max_new_tokens(p.max_new_tokens);
  *r->mutable_sampling() = ToProto(p.sampling);
  r->mutable_codec()->set_name(p.codec);
  r->mutable_codec()->set_quality_floor(p.quality_floor);
  r->mutable_codec()->set_min_token_agreement(p.min_token_agreement);
  r->set_decode_target(p.decode_target);
  if (p.pipelined.has_value()) r->set_pipelined(*p.pipelined);
  r->set_chat(p.chat);
}

absl::StatusOr<GenerateParams> FromProto(const pb::GenerateRequest& r) {
  GenerateParams p;
  KVS_RETURN_IF_ERROR(CheckId(r.request_id(), "request_id"));
  KVS_RETURN_IF_ERROR(CheckId(r.codec().name(), "codec.name"));
  KVS_RETURN_IF_ERROR(CheckId(r.decode_target(), "decode_target"));
  if (!r.prompt().empty() && r.prompt_token_ids_size() > 0) {
    return absl::InvalidArgumentError("give either prompt or prompt_token_ids, not both");
  }
  p.request_id = r.request_id();
  p.prompt = r.prompt();
  p.prompt_token_ids.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
  p.max_new_tokens = r.max_new_tokens();
  p.sampling = FromProto(r.sampling());
  p.codec = r.codec().name();
  p.quality_floor = r.codec().quality_floor();
  p.min_token_agreement = r.codec().min_token_agreement();
  p.decode_target = r.decode_target();
  if (r.has_pipelined()) p.pipelined = r.pipelined();
  p.chat = r.chat();
  return p;
}

void ToProto(const OpenSessionParams& p, pb::OpenSessionRequest* r) {
  r->set_request_id(p.request_id);
  r->set_model_fingerprint(p.model_fingerprint);
  *r->mutable_geometry() = ToProto(p.geom);
  r->set_dtype(ToProto(p.dtype));
  r->set_codec(p.codec);
  r->mutable_codec_params()->set_fp8_compat(p.fp8_compat);
  r->mutable_codec_params()->set_prune_fill_zero(p.prune_fill_zero);
  r->set_codec_params_digest(p.codec_params_digest);
  r->mutable_chunk_plan()->set_layers_per_chunk(p.layers_per_chunk);
  r->mutable_chunk_plan()->set_tokens_per_chunk(p.tokens_per_chunk);
  r->set_transport(ToProto(p.transport));
  r->set_frame_version(p.frame_version);
  r->set_lease_ms(p.lease_ms);
  r->set_prompt_tokens(p.geom.tokens);
}

absl::StatusOr<OpenSessionParams> FromProto(const pb::OpenSessionRequest& r) {
  OpenSessionParams p;
  KVS_RETURN_IF_ERROR(CheckId(r.request_id(), "request_id"));
  KVS_RETURN_IF_ERROR(CheckId(r.model_fingerprint(), "model_fingerprint"));
  KVS_RETURN_IF_ERROR(CheckId(r.codec(), "codec"));
  if (!r.has_geometry()) return absl::InvalidArgumentError("geometry is missing");
  p.request_id = r.request_id();
  p.model_fingerprint = r.model_fingerprint();
  p.geom = FromProto(r.geometry());
  KVS_ASSIGN_OR_RETURN(p.dtype, FromProto(r.dtype()));
  p.codec = r.codec();
  p.fp8_compat = r.codec_params().fp8_compat();
  p.prune_fill_zero = r.codec_params().prune_fill_zero();
  p.codec_params_digest = r.codec_params_digest();
  p.layers_per_chunk = r.chunk_plan().layers_per_chunk() == 0 ? 1 : r.chunk_plan().layers_per_chunk();
  p.tokens_per_chunk = r.chunk_plan().tokens_per_chunk();
  KVS_ASSIGN_OR_RETURN(p.transport, FromProto(r.transport()));
  p.frame_version = r.frame_version();
  p.lease_ms = r.lease_ms();
  if (r.prompt_tokens() != 0 && r.prompt_tokens() != p.geom.tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_tokens ", r.prompt_tokens(),
                                                   " differs from geometry.tokens ", p.geom.tokens));
  }
  if (p.lease_ms < 0) return absl::InvalidArgumentError("lease_ms must be >= 0");
  return p;
}

void ToProto(const SessionGrant& g, pb::OpenSessionResponse* r) {
  r->set_session_id(g.session_id);
  r->set_session_token(TokenBytes(g.token));
  r->mutable_endpoint()->set_transport(ToProto(g.transport));
  if (g.transport == TransportKind::kUcx) {
    r->mutable_endpoint()->set_ucx_address(g.endpoint);
  } else {
    r->mutable_endpoint()->set_tcp_address(g.endpoint);
  }
  r->mutable_endpoint()->set_transport_detail(g.transport_detail);
  r->set_lease_ms(g.lease_ms);
  r->set_codec_params_digest(g.codec_params_digest);
  r->set_chunk_count(g.chunk_count);
  r->set_frame_version(g.frame_version);
}

absl::StatusOr<SessionGrant> FromProto(const pb::OpenSessionResponse& r) {
  SessionGrant g;
  g.session_id = r.session_id();
  KVS_ASSIGN_OR_RETURN(g.token, TokenFromBytes(r.session_token()));
  KVS_ASSIGN_OR_RETURN(g.transport, FromProto(r.endpoint().transport()));
  g.endpoint = g.transport == TransportKind::kUcx ? r.endpoint().ucx_address() : r.endpoint().tcp_address();
  g.transport_detail = r.endpoint().transport_detail();
  g.lease_ms = r.lease_ms();
  g.codec_params_digest = r.codec_params_digest();
  g.chunk_count = r.chunk_count();
  g.frame_version = r.frame_version();
  return g;
}

void ToProto(const ResumeParams& p, pb::ResumeRequest* r) {
  r->set_session_id(p.session_id);
  r->set_session_token(TokenBytes(p.token));
  r->set_first_token(p.first_token);
  r->set_max_new_tokens(p.max_new_tokens);
  *r->mutable_sampling() = ToProto(p.sampling);
  r->set_request_id(p.request_id);
}

absl::StatusOr<ResumeParams> FromProto(const pb::ResumeRequest& r) {
  ResumeParams p;
  KVS_RETURN_IF_ERROR(CheckId(r.request_id(), "request_id"));
  p.session_id = r.session_id();
  KVS_ASSIGN_OR_RETURN(p.token, TokenFromBytes(r.session_token()));
  p.first_token = r.first_token();
  p.max_new_tokens = r.max_new_tokens();
  p.sampling = FromProto(r.sampling());
  p.request_id = r.request_id();
  return p;
}

std::string TokenBytes(const transfer::SessionToken& t) {
  return std::string(reinterpret_cast<const char*>(t.data()), t.size());
}

absl::StatusOr<transfer::SessionToken> TokenFromBytes(const std::string& b) {
  transfer::SessionToken t{};
  if (b.size() != t.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_token is ", b.size(), " bytes; expected ", t.size()));
  }
  std::memcpy(t.data(), b.data(), t.size());
  return t;
}

}  // namespace kvs::control
