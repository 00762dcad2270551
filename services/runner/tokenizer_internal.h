// services/runner/tokenizer_internal.h — internal: constructors of the tokenizer families, for
// Tokenizer::FromGguf only.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "services/runner/tokenizer.h"

namespace kvs {

// tokenizer.ggml.model == "gpt2": byte-level BPE (bpe_tokenizer.cc).
absl::StatusOr<std::unique_ptr<Tokenizer>> NewByteLevelBpeTokenizer(const GgufFile& gguf);

}  // namespace kvs
