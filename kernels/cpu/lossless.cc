// lossless_zstd and lossless_lz4 (CODECS.md §2.2, §2.3): the identity body compressed as one
// zstd frame (level 3, content size in the frame, no checksum) or one LZ4 frame (default
// preferences: fast mode, 64 KiB linked blocks, content size stored). Bit-exact; accept bf16.
// Layout and size: kernels/format/identity.h.
#include <zstd.h>
#include <lz4frame.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status/status.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/format/identity.h"

namespace kvs {
namespace {

constexpr CodecInfo kZstdInfo{CodecId::kLosslessZstd, "lossless_zstd", "lossless",
                              "zstd level 3 over the raw fp16 bytes", false, false, false};
constexpr CodecInfo kLz4Info{CodecId::kLosslessLz4, "lossless_lz4", "lossless",
                             "LZ4 frame over the raw fp16 bytes", false, false, false};

// The raw K ‖ V stream is compressed from two separate buffers (no staging copy of 4N bytes):
// zstd and LZ4 both take streaming input.
class LosslessCodec : public CodecBase {
 public:
  using CodecBase::CodecBase;

 protected:
  bool AcceptsBf16() const override { return true; }
};

class ZstdCodec final : public LosslessCodec {
 public:
  explicit ZstdCodec(const CodecOptions& o) : LosslessCodec(kZstdInfo, o) {}

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return 8 + ZSTD_compressBound(format::IdentityBodyBytes(g));
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool*) const override {
    const uint64_t raw = format::IdentityBodyBytes(kv.geom());
    std::memcpy(body.data(), &raw, 8);
    std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
    if (!cctx) return absl::ResourceExhaustedError("lossless_zstd: cannot create context");
    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
    ZSTD_CCtx_setPledgedSrcSize(cctx.get(), raw);
    ZSTD_outBuffer out{body.data() + 8, body.size() - 8, 0};
    const size_t half = raw / 2;
    for (int part = 0; part < 2; ++part) {
      ZSTD_inBuffer in{part == 0 ? static_cast<const void*>(kv.k.data) : kv.v.data, half, 0};
      const ZSTD_EndDirective mode = part == 0 ? ZSTD_e_continue : ZSTD_e_end;
      for (;;) {
        const size_t rc = ZSTD_compressStream2(cctx.get(), &out, &in, mode);
        if (ZSTD_isError(rc)) {
          return absl::InternalError(absl::StrCat("lossless_zstd: ", ZSTD_getErrorName(rc)));
        }
        if (mode == ZSTD_e_continue ? in.pos == in.size : rc == 0) break;
      }
    }
    return 8 + out.pos;
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool*, absl::Span<uint8_t>) const override {
    const uint64_t raw = format::IdentityBodyBytes(out.geom());
    ByteReader r(body);
    KVS_ASSIGN_OR_RETURN(uint64_t declared, r.Get<uint64_t>("raw length"));
    if (declared != raw) {
      return absl::InvalidArgumentError(absl::StrCat("lossless_zstd: raw length ", declared,
                                                     " does not match geometry (", raw, ")"));
    }
    const unsigned long long content = ZSTD_getFrameContentSize(body.data() + 8, body.size() - 8);
    if (content != raw) {
      return absl::InvalidArgumentError("lossless_zstd: frame content size does not match geometry");
    }
    std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
    if (!dctx) return absl::ResourceExhaustedError("lossless_zstd: cannot create context");
    ZSTD_inBuffer in{body.data() + 8, body.size() - 8, 0};
    const size_t half = raw / 2;
    size_t last = 1;
    for (int part = 0; part < 2; ++part) {
      ZSTD_outBuffer o{part == 0 ? static_cast<void*>(out.k.data) : out.v.data, half, 0};
      while (o.pos < o.size) {
        const size_t before_in = in.pos, before_out = o.pos;
        last = ZSTD_decompressStream(dctx.get(), &o, &in);
        if (ZSTD_isError(last)) {
          return absl::InvalidArgumentError(
              absl::StrCat("lossless_zstd: corrupt frame: ", ZSTD_getErrorName(last)));
        }
        if (in.pos == before_in && o.pos == before_out) {
          return absl::InvalidArgumentError("lossless_zstd: frame ends before the data does");
        }
      }
    }
    if (last != 0 || in.pos != in.size) {
      return absl::InvalidArgumentError("lossless_zstd: trailing or incomplete frame data");
    }
    return absl::OkStatus();
  }
};

class Lz4Codec final : public LosslessCodec {
 public:
  explicit Lz4Codec(const CodecOptions& o) : LosslessCodec(kLz4Info, o) {}

 protected:
  static LZ4F_preferences_t Prefs(uint64_t raw) {
    LZ4F_preferences_t p;
    std::memset(&p, 0, sizeof p);
    p.frameInfo.blockSizeID = LZ4F_max64KB;
    p.frameInfo.blockMode = LZ4F_blockLinked;
    p.frameInfo.contentSize = raw;
    return p;
  }
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    const uint64_t raw = format::IdentityBodyBytes(g);
    const LZ4F_preferences_t p = Prefs(raw);
    // header (<= LZ4F_HEADER_SIZE_MAX) + both halves fed separately + end mark.
    return 8 + LZ4F_HEADER_SIZE_MAX + 2 * LZ4F_compressBound(raw / 2, &p) + 16;
  }
  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool*) const override {
    const uint64_t raw = format::IdentityBodyBytes(kv.geom());
    std::memcpy(body.data(), &raw, 8);
    LZ4F_cctx* raw_ctx = nullptr;
    if (LZ4F_isError(LZ4F_createCompressionContext(&raw_ctx, LZ4F_VERSION))) {
      return absl::ResourceExhaustedError("lossless_lz4: cannot create context");
    }
    std::unique_ptr<LZ4F_cctx, LZ4F_errorCode_t (*)(LZ4F_cctx*)> ctx(raw_ctx,
                                                                     LZ4F_freeCompressionContext);
    const LZ4F_preferences_t p = Prefs(raw);
    uint8_t* dst = body.data() + 8;
    size_t cap = body.size() - 8, pos = 0;
    auto check = [](size_t rc) -> absl::Status {
      if (LZ4F_isError(rc)) {
        return absl::InternalError(absl::StrCat("lossless_lz4: ", LZ4F_getErrorName(rc)));
      }
      return absl::OkStatus();
    };
    size_t rc = LZ4F_compressBegin(ctx.get(), dst, cap, &p);
    KVS_RETURN_IF_ERROR(check(rc));
    pos += rc;
    for (const uint16_t* src : {kv.k.data, kv.v.data}) {
      rc = LZ4F_compressUpdate(ctx.get(), dst + pos, cap - pos, src, raw / 2, nullptr);
      KVS_RETURN_IF_ERROR(check(rc));
      pos += rc;
    }
    rc = LZ4F_compressEnd(ctx.get(), dst + pos, cap - pos, nullptr);
    KVS_RETURN_IF_ERROR(check(rc));
    pos += rc;
    return 8 + pos;
  }
  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t>, ThreadPool*, absl::Span<uint8_t>) const override {
    const uint64_t raw = format::IdentityBodyBytes(out.geom());
    ByteReader r(body);
    KVS_ASSIGN_OR_RETURN(uint64_t declared, r.Get<uint64_t>("raw length"));
    if (declared != raw) {
      return absl::InvalidArgumentError(absl::StrCat("lossless_lz4: raw length ", declared,
                                                     " does not match geometry (", raw, ")"));
    }
    LZ4F_dctx* raw_ctx = nullptr;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&raw_ctx, LZ4F_VERSION))) {
      return absl::ResourceExhaustedError("lossless_lz4: cannot create context");
    }
    std::unique_ptr<LZ4F_dctx, LZ4F_errorCode_t (*)(LZ4F_dctx*)> ctx(
        raw_ctx, LZ4F_freeDecompressionContext);
    const uint8_t* src = body.data() + 8;
    size_t src_left = body.size() - 8;
    size_t hint = 1;
    for (uint16_t* dst16 : {out.k.data, out.v.data}) {
      uint8_t* dst = reinterpret_cast<uint8_t*>(dst16);
      size_t dst_left = raw / 2;
      while (dst_left > 0) {
        size_t dst_size = dst_left, src_size = src_left;
        hint = LZ4F_decompress(ctx.get(), dst, &dst_size, src, &src_size, nullptr);
        if (LZ4F_isError(hint)) {
          return absl::InvalidArgumentError(
              absl::StrCat("lossless_lz4: corrupt frame: ", LZ4F_getErrorName(hint)));
        }
        if (dst_size == 0 && src_size == 0) {
          return absl::InvalidArgumentError("lossless_lz4: frame ends before the data does");
        }
        dst += dst_size;
        dst_left -= dst_size;
        src += src_size;
        src_left -= src_size;
      }
    }
    // Consume the end mark; the frame must end exactly at the end of the body.
    while (hint != 0) {
      uint8_t sink[16];
      size_t dst_size = sizeof sink, src_size = src_left;
      hint = LZ4F_decompress(ctx.get(), sink, &dst_size, src, &src_size, nullptr);
      if (LZ4F_isError(hint) || dst_size != 0 || (src_size == 0 && hint != 0)) {
        return absl::InvalidArgumentError("lossless_lz4: frame holds more data than the geometry");
      }
      src += src_size;
      src_left -= src_size;
    }
    if (src_left != 0) return absl::InvalidArgumentError("lossless_lz4: trailing bytes after frame");
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewLosslessZstdCodec(const CodecOptions& o) {
  return std::make_unique<ZstdCodec>(o);
}
std::unique_ptr<Codec> NewLosslessLz4Codec(const CodecOptions& o) {
  return std::make_unique<Lz4Codec>(o);
}

}  // namespace kvs
