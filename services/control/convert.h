// services/control/convert.h — kvshuttle.v1 messages <-> the domain types of api.h.
//
// Requests from the wire are validated structurally here (sizes, enum values, token lengths):
// a malformed message is INVALID_ARGUMENT before any domain code sees it. Semantic checks
// (model fingerprint, codec availability, limits) belong to the services.
#pragma once

#include "absl/status/statusor.h"
#include "kvshuttle/v1/decode.pb.h"
#include "kvshuttle/v1/prefill.pb.h"
#include "services/control/api.h"

namespace kvs::control {

namespace pb = ::kvshuttle::v1;

pb::KvGeometry ToProto(const KvGeometry& g);
KvGeometry FromProto(const pb::KvGeometry& g);

pb::Sampling ToProto(const SamplingParams& s);
SamplingParams FromProto(const pb::Sampling& s);

pb::Transport ToProto(TransportKind t);
absl::StatusOr<TransportKind> FromProto(pb::Transport t);

pb::DType ToProto(DType d);
absl::StatusOr<DType> FromProto(pb::DType d);

void ToProto(const RequestStats& s, pb::RequestStats* out);
RequestStats FromProto(const pb::RequestStats& s);

void ToProto(const TokenPiece& t, pb::TokenPiece* out);
TokenPiece FromProto(const pb::TokenPiece& t);

void ToProto(const ServerInfo& i, pb::InfoResponse* out);
ServerInfo FromProto(const pb::InfoResponse& i);

void ToProto(const GenerateParams& p, pb::GenerateRequest* out);
absl::StatusOr<GenerateParams> FromProto(const pb::GenerateRequest& r);

void ToProto(const OpenSessionParams& p, pb::OpenSessionRequest* out);
absl::StatusOr<OpenSessionParams> FromProto(const pb::OpenSessionRequest& r);

void ToProto(const SessionGrant& g, pb::OpenSessionResponse* out);
absl::StatusOr<SessionGrant> FromProto(const pb::OpenSessionResponse& r);

void ToProto(const ResumeParams& p, pb::ResumeRequest* out);
absl::StatusOr<ResumeParams> FromProto(const pb::ResumeRequest& r);

// 16 raw bytes <-> SessionToken (INVALID_ARGUMENT for another length).
std::string TokenBytes(const transfer::SessionToken& t);
absl::StatusOr<transfer::SessionToken> TokenFromBytes(const std::string& b);

}  // namespace kvs::control
