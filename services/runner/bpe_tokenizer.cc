// services/runner/bpe_tokenizer.cc — GPT-2 style byte-level BPE from GGUF metadata.
//
// Encoding: (1) with parse_special, split out spans that spell control tokens; (2) pre-tokenize
// each remaining span; (3) map each piece's bytes to GPT-2's printable code points; (4) apply the
// merges by rank (lowest first, leftmost on ties — what HF `tokenizers` BPE does); (5) look the
// symbols up in the vocabulary.
//
// Pre-tokenizer. GPT-2's regex
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// is implemented as a hand-written scanner over code points. For tokenizer.ggml.pre "smollm"
// (and "starcoder", "refact", ...: HF's Digits(individual_digits=true) before ByteLevel) every
// \p{N} code point is first split into a piece of its own. The Unicode classes are an
// approximation: \s is the White_Space set; \p{N} and \p{L} are tables of the main ranges (Latin,
// Greek, Cyrillic, Armenian, Hebrew, Arabic, Devanagari, Thai, Georgian, Hangul, kana, CJK,
// letter-like symbols, fullwidth forms, and the digit/number-form blocks); every other code
// point, including combining marks, counts as "other" (punctuation/symbol). On the WikiText-2 test
// split and Moby Dick this reproduces HF tokenizers' ids for SmolLM2 line for line (see the
// tokenizer tests); scripts outside the tables may split differently.
#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status.h"
#include "services/runner/gguf.h"
#include "services/runner/tokenizer_internal.h"

namespace kvs {
namespace {

constexpr int32_t kTypeControl = 3, kTypeUserDefined = 4;

struct Range {
  uint32_t lo, hi;
};

bool InRanges(uint32_t c, const Range* r, size_t n) {
  // Ranges are sorted; binary search.
  size_t lo = 0, hi = n;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (c < r[mid].lo) {
      hi = mid;
    } else if (c > r[mid].hi) {
      lo = mid + 1;
    } else {
      return true;
    }
  }
  return false;
}

constexpr Range kNumber[] = {
    {0x30, 0x39},       {0xB2, 0xB3},       {0xB9, 0xB9},       {0xBC, 0xBE},
    {0x660, 0x669},     {0x6F0, 0x6F9},     {0x966, 0x96F},     {0xE50, 0xE59},
    {0x2070, 0x2070},   {0x2074, 0x2079},   {0x2080, 0x2089},   {0x2150, 0x2182},
    {0x2185, 0x2189},   {0x2460, 0x249B},   {0x24EA, 0x24FF},   {0x2776, 0x2793},
    {0x3007, 0x3007},   {0x3021, 0x3029},   {0x3038, 0x303A},   {0x3192, 0x3195},
    {0x3220, 0x3229},   {0x3248, 0x324F},   {0x3251, 0x325F},   {0x3280, 0x3289},
    {0x32B1, 0x32BF},   {0xFF10, 0xFF19},   {0x1D7CE, 0x1D7FF},
};

constexpr Range kLetter[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xAA, 0xAA},       {0xB5, 0xB5},
    {0xBA, 0xBA},       {0xC0, 0xD6},       {0xD8, 0xF6},       {0xF8, 0x2C1},
    {0x2C6, 0x2D1},     {0x2E0, 0x2E4},     {0x2EC, 0x2EC},     {0x2EE, 0x2EE},
    {0x370, 0x374},     {0x376, 0x377},     {0x37A, 0x37D},     {0x37F, 0x37F},
    {0x386, 0x386},     {0x388, 0x3F5},     {0x3F7, 0x481},     {0x48A, 0x52F},
    {0x531, 0x556},     {0x559, 0x559},     {0x560, 0x588},     {0x5D0, 0x5EA},
    {0x5EF, 0x5F2},     {0x620, 0x64A},     {0x66E, 0x66F},     {0x671, 0x6D3},
    {0x6D5, 0x6D5},     {0x6E5, 0x6E6},     {0x6EE, 0x6EF},     {0x6FA, 0x6FC},
    {0x6FF, 0x6FF},     {0x904, 0x939},     {0x93D, 0x93D},     {0x950, 0x950},
    {0x958, 0x961},     {0x971, 0x980},     {0xE01, 0xE30},     {0xE32, 0xE33},
    {0xE40, 0xE46},     {0x10A0, 0x10C5},   {0x10D0, 0x10FA},   {0x10FC, 0x10FF},
    {0x1100, 0x11FF},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F7D},   {0x1F80, 0x1FB4},
    {0x1FB6, 0x1FBC},   {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},
    {0x1FD0, 0x1FD3},   {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},
    {0x1FF6, 0x1FFC},   {0x2071, 0x2071},   {0x207F, 0x207F},   {0x2090, 0x209C},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},
    {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},
    {0x212A, 0x212D},   {0x212F, 0x2139},   {0x213C, 0x213F},   {0x2145, 0x2149},
    {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2CE4},   {0x2CEB, 0x2CEE},
    {0x2D00, 0x2D25},   {0x3005, 0x3006},   {0x3031, 0x3035},   {0x303B, 0x303C},
    {0x3041, 0x3096},   {0x309D, 0x309F},   {0x30A1, 0x30FA},   {0x30FC, 0x30FF},
    {0x3105, 0x312F},   {0x3131, 0x318E},   {0x31A0, 0x31BF},   {0x31F0, 0x31FF},
    {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},   {0xA000, 0xA48C},   {0xA4D0, 0xA4FD},
    {0xA500, 0xA60C},   {0xA640, 0xA66E},   {0xA680, 0xA69D},   {0xA722, 0xA788},
    {0xA78B, 0xA7FF},   {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},   {0xFB00, 0xFB06},
    {0xFB1D, 0xFB1D},   {0xFB1F, 0xFB28},   {0xFB2A, 0xFB4F},   {0xFB50, 0xFDFB},
    {0xFE70, 0xFEFC},   {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A},   {0xFF66, 0xFFDC},
    {0x20000, 0x2FA1F},
};

enum class Cls : uint8_t { kLetter, kNumber, kSpace, kOther };

Cls Classify(uint32_t c) {
  if (c < 0x80) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return Cls::kLetter;
    if (c >= '0' && c <= '9') return Cls::kNumber;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return Cls::kSpace;
    return Cls::kOther;
  }
  if (c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
      c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000) {
    return Cls::kSpace;
  }
  if (InRanges(c, kNumber, sizeof(kNumber) / sizeof(kNumber[0]))) return Cls::kNumber;
  if (InRanges(c, kLetter, sizeof(kLetter) / sizeof(kLetter[0]))) return Cls::kLetter;
  return Cls::kOther;
}

// One code point of the input: its class and its byte range.
struct Cp {
  uint32_t c;
  Cls cls;
  size_t begin, end;
};

// Decodes UTF-8; a malformed byte becomes a one-byte "other" code point.
std::vector<Cp> DecodeUtf8(absl::string_view s) {
  std::vector<Cp> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    uint32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      const uint8_t cb = static_cast<uint8_t>(s[i + k]);
      if ((cb & 0xC0) != 0x80) ok = false;
      c = (c << 6) | (cb & 0x3F);
    }
    if (!ok) {
      out.push_back({0xFFFD, Cls::kOther, i, i + 1});
      ++i;
      continue;
    }
    out.push_back({c, Classify(c), i, i + n});
    i += n;
  }
  return out;
}

void AppendUtf8(uint32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// GPT-2's regex over cps[b, e), appending [begin, end) byte ranges of the pieces.
void Gpt2Split(const std::vector<Cp>& cps, size_t b, size_t e,
               std::vector<std::pair<size_t, size_t>>* pieces) {
  auto is = [&](size_t k, Cls c) { return k < e && cps[k].cls == c; };
  size_t i = b;
  while (i < e) {
    const uint32_t c = cps[i].c;
    size_t k = i;
    if (c == '\'' && i + 1 < e) {
      const uint32_t n1 = cps[i + 1].c, n2 = i + 2 < e ? cps[i + 2].c : 0;
      if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
        k = i + 2;
      } else if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
        k = i + 3;
      }
    }
    if (k == i) {
      for (Cls cls : {Cls::kLetter, Cls::kNumber, Cls::kOther}) {
        size_t j = (c == ' ' && is(i + 1, cls)) ? i + 1 : i;
        if (!is(j, cls)) continue;
        while (is(j, cls)) ++j;
        k = j;
        break;
      }
    }
    if (k == i) {  // whitespace: \s+(?!\S) then \s+
      size_t j = i;
      while (is(j, Cls::kSpace)) ++j;
      if (j < e && j - i > 1) --j;  // leave the last space to prefix the next word
      k = j;
    }
    if (k == i) k = i + 1;  // unreachable: every class is covered above
    pieces->emplace_back(cps[i].begin, cps[k - 1].end);
    i = k;
  }
}

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  absl::Status Init(const GgufFile& gguf) {
    KVS_RETURN_IF_ERROR(InitCommon(gguf, /*default_add_bos=*/false));
    std::string pre = "default";
    if (gguf.Has("tokenizer.ggml.pre")) {
      KVS_ASSIGN_OR_RETURN(pre, gguf.GetString("tokenizer.ggml.pre"));
    }
    if (pre == "default" || pre == "gpt2" || pre == "gpt-2") {
      split_digits_ = false;
    } else if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "codeshell" ||
               pre == "command-r" || pre == "exaone" || pre == "minerva-7b") {
      split_digits_ = true;
    } else {
      return absl::UnimplementedError(absl::StrCat("tokenizer: pre-tokenizer '", pre,
                                                   "' unsupported (want gpt2 or smollm-style)"));
    }
    KVS_ASSIGN_OR_RETURN(const std::vector<std::string>* merges,
                         gguf.GetStringArray("tokenizer.ggml.merges"));
    merge_rank_.reserve(merges->size());
    for (size_t r = 0; r < merges->size(); ++r) {
      const std::string& m = (*merges)[r];
      const size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size()) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer: malformed merge ", r, ": '", m, "'"));
      }
      merge_rank_.emplace(m, static_cast<int32_t>(r));  // first rank wins on duplicates
    }
    for (int32_t id = 0; id < vocab_size(); ++id) {
      vocab_.emplace(tokens_[id], id);
      if (token_types_[id] == kTypeControl || token_types_[id] == kTypeUserDefined) {
        if (!tokens_[id].empty()) specials_.push_back(id);
      }
    }
    // Longest special first, so that a prefix never shadows a longer match.
    std::sort(specials_.begin(), specials_.end(),
              [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
    // GPT-2 bytes_to_unicode(): printable bytes map to themselves, the rest to 256 + n.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      byte_to_cp_[b].clear();
      AppendUtf8(cp, &byte_to_cp_[b]);
      cp_to_byte_.emplace(cp, static_cast<uint8_t>(b));
    }
    return absl::OkStatus();
  }

  Kind kind() const override { return Kind::kByteLevelBpe; }

  std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_bos && bos_ >= 0) out.push_back(bos_);
    size_t start = 0;
    if (options.parse_special) {
      for (size_t i = 0; i < text.size();) {
        int32_t hit = -1;
        for (int32_t id : specials_) {
          if (absl::StartsWith(text.substr(i), tokens_[id])) {
            hit = id;
            break;
          }
        }
        if (hit < 0) {
          ++i;
          continue;
        }
        EncodeText(text.substr(start, i - start), &out);
        out.push_back(hit);
        i += tokens_[hit].size();
        start = i;
      }
    }
    EncodeText(text.substr(start), &out);
    return out;
  }

  std::string DecodeToken(int32_t /*prev*/, int32_t token) const override {
    if (token < 0 || token >= vocab_size() || IsControl(token)) return "";
    std::string out;
    for (const Cp& cp : DecodeUtf8(tokens_[token])) {
      auto it = cp_to_byte_.find(cp.c);
      if (it != cp_to_byte_.end()) {
        out.push_back(static_cast<char>(it->second));
      } else {
        out.append(tokens_[token], cp.begin, cp.end - cp.begin);
      }
    }
    return out;
  }

 private:
  void EncodeText(absl::string_view text, std::vector<int32_t>* out) const {
    if (text.empty()) return;
    const std::vector<Cp> cps = DecodeUtf8(text);
    std::vector<std::pair<size_t, size_t>> pieces;
    size_t run = 0;
    for (size_t i = 0; i < cps.size(); ++i) {
      if (split_digits_ && cps[i].cls == Cls::kNumber) {
        Gpt2Split(cps, run, i, &pieces);
        pieces.emplace_back(cps[i].begin, cps[i].end);
        run = i + 1;
      }
    }
    Gpt2Split(cps, run, cps.size(), &pieces);
    for (const auto& [b, e] : pieces) EncodePiece(text.substr(b, e - b), out);
  }

  // BPE over one pre-tokenized piece.
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* out) const {
    struct Sym {
      std::string text;
      int prev, next;
    };
    std::vector<Sym> syms(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) {
      syms[i] = {byte_to_cp_[static_cast<uint8_t>(piece[i])], static_cast<int>(i) - 1,
                 i + 1 < piece.size() ? static_cast<int>(i + 1) : -1};
    }
    struct Cand {
      int32_t rank;
      int left, right;
      size_t len;
    };
    auto worse = [](const Cand& a, const Cand& b) {
      if (a.rank != b.rank) return a.rank > b.rank;
      return a.left > b.left;
    };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    std::string key;
    auto try_pair = [&](int l) {
      if (l < 0 || syms[l].next < 0) return;
      const int r = syms[l].next;
      key.clear();
      absl::StrAppend(&key, syms[l].text, " ", syms[r].text);
      auto it = merge_rank_.find(key);
      if (it == merge_rank_.end()) return;
      heap.push({it->second, l, r, syms[l].text.size() + syms[r].text.size()});
    };
    for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) try_pair(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Sym& l = syms[c.left];
      if (l.text.empty() || l.next != c.right || syms[c.right].text.empty() ||
          l.text.size() + syms[c.right].text.size() != c.len) {
        continue;  // stale
      }
      Sym& r = syms[c.right];
      l.text += r.text;
      r.text.clear();
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = c.left;
      try_pair(l.prev);
      try_pair(c.left);
    }
    for (int k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) {
      auto it = vocab_.find(syms[k].text);
      if (it != vocab_.end()) {
        out->push_back(it->second);
        continue;
      }
      // Not in the vocabulary (an incomplete merge table): fall back to single bytes.
      for (const Cp& cp : DecodeUtf8(syms[k].text)) {
        std::string one;
        AppendUtf8(cp.c, &one);
        auto jt = vocab_.find(one);
        out->push_back(jt != vocab_.end() ? jt->second : unk_);
      }
    }
  }

  bool split_digits_ = false;
  std::unordered_map<std::string, int32_t> merge_rank_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<int32_t> specials_;
  std::array<std::string, 256> byte_to_cp_;
  std::unordered_map<uint32_t, uint8_t> cp_to_byte_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> NewByteLevelBpeTokenizer(const GgufFile& gguf) {
  auto t = std::make_unique<ByteLevelBpeTokenizer>();
  KVS_RETURN_IF_ERROR(t->Init(gguf));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace kvs
