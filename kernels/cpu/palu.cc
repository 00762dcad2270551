// palu_lr and palu_int4 (CODECS.md §2.10, §2.13): per-request low-rank factorisation of every
// (layer, head) slice A = K[l,h] or V[l,h] ([S, D]) by truncated SVD, A ≈ US_r · Vᵀ_r with
// r = max(1, ⌊min(S, D)/4⌋). palu_lr stores the factors as fp16; palu_int4 stores them as fp32
// [L, H, S+D, r] arrays (US_r rows, then V_r rows) quantised with grouped INT4
// (kernels/cpu/int4_group.h). Decode: factors to fp32 (palu_int4: through fp16, as the
// reference's dequantiser returns fp16), out[s, d] = Σ_i US[s, i]·Vᵀ[i, d] in fp32 with i
// ascending, rounded to fp16. Layout and sizes: kernels/format/palu.h.
//
// Deviations from the reference (NumPy float32 SVD): the factors are computed in double from the
// exact fp32 input and rounded double -> fp32 (-> fp16 for palu_lr), so they agree with the
// reference to its float32 SVD precision; singular vectors may differ in sign, which leaves
// US_r · Vᵀ_r and its fp16 rounding unchanged.
//
// Paths: the reference runs Eigen's BDCSVD (Jacobi below 16 columns) per slice on one thread.
// The fast path runs slices in parallel and computes the same truncation from the Gram matrix of
// the tall orientation M (M = A when S >= D, else Aᵀ; n = min(S, D)): G = MᵀM (n x n, double,
// AVX2/FMA kernel), its eigenvectors W (Eigen's SelfAdjointEigenSolver) give the top-r right
// singular vectors of M and P = M·W_r = (left vectors)·Σ_r. In double this matches the SVD to
// ~1e-12 (error ≈ ε·σ₁²/gap), far below fp16 resolution, so both paths write the same factors
// but for rare last-bit cases. The decoders of both paths compute the same fp32 sums in the same
// order and give identical bits.
//
// Allocation: the encoder allocates its SVD scratch (Eigen matrices, a few per thread and call);
// the codec API allows this for palu only. Decode uses the caller's workspace.
// Cost: O(S·D·n + n³) per slice; compute-bound, unlike every other codec.
#include <immintrin.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cstring>

#include "common/half/half.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/codecs.h"
#include "kernels/cpu/int4_group.h"
#include "kernels/format/palu.h"

namespace kvs {
namespace {

constexpr CodecInfo kLrInfo{CodecId::kPaluLr, "palu_lr", "low-rank",
                            "rank-25% truncated SVD of every (layer, head) slice, fp16 factors",
                            /*lossy=*/true, /*exact_size=*/true, /*prunes=*/false};
constexpr CodecInfo kInt4Info{CodecId::kPaluInt4, "palu_int4", "hybrid",
                              "palu_lr's SVD factors quantised with grouped INT4",
                              /*lossy=*/true, /*exact_size=*/true, /*prunes=*/false};

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

bool HasAvx2Fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

// Hands out 64-byte-aligned arrays from the caller's workspace; WorkspaceBytes() reserves the
// sizes it asks for plus kSlack, so any base alignment works.
constexpr size_t kAlign = 64, kSlack = kAlign;
constexpr size_t Padded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
class Arena {
 public:
  explicit Arena(absl::Span<uint8_t> ws)
      : p_(ws.data() + (kAlign - reinterpret_cast<uintptr_t>(ws.data()) % kAlign) % kAlign) {}
  template <typename T>
  T* Take(size_t n) {
    T* t = reinterpret_cast<T*>(p_);
    p_ += Padded(n * sizeof(T));
    return t;
  }

 private:
  uint8_t* p_;
};

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// ---- Factorisation ---------------------------------------------------------------------------

// G = MᵀM for M [m, ld] row-major whose columns past n are zero; G is [ld, ld] row-major. Tiles of
// 4 x 8 entries on and above the diagonal accumulate over all rows in registers; the lower
// triangle is mirrored.
__attribute__((target("avx2,fma"))) void GramAvx2(const double* M, int64_t m, int64_t ld,
                                                  double* G) {
  for (int64_t i0 = 0; i0 < ld; i0 += 4) {
    for (int64_t j0 = i0 / 8 * 8; j0 < ld; j0 += 8) {
      __m256d acc[4][2];
      for (auto& a : acc) a[0] = a[1] = _mm256_setzero_pd();
      for (int64_t k = 0; k < m; ++k) {
        const double* row = M + k * ld;
        const __m256d b0 = _mm256_loadu_pd(row + j0), b1 = _mm256_loadu_pd(row + j0 + 4);
        for (int ii = 0; ii < 4; ++ii) {
          const __m256d a = _mm256_broadcast_sd(row + i0 + ii);
          acc[ii][0] = _mm256_fmadd_pd(a, b0, acc[ii][0]);
          acc[ii][1] = _mm256_fmadd_pd(a, b1, acc[ii][1]);
        }
      }
      for (int ii = 0; ii < 4; ++ii) {
        _mm256_storeu_pd(G + (i0 + ii) * ld + j0, acc[ii][0]);
        _mm256_storeu_pd(G + (i0 + ii) * ld + j0 + 4, acc[ii][1]);
      }
    }
  }
  for (int64_t i = 0; i < ld; ++i) {
    for (int64_t j = 0; j < i; ++j) G[i * ld + j] = G[j * ld + i];
  }
}

// Rank-r factors of one [S, D] fp16 slice: A ≈ us · vᵀ, us [S, r] = U_r·Σ_r, v [D, r] = V_r.
class Factorizer {
 public:
  Factorizer(int64_t S, int64_t D, int64_t r, CodecPath path)
      : S_(S), D_(D), r_(r), path_(path), us_(S, r), v_(D, r) {
    if (path_ == CodecPath::kReference) {
      a_.resize(S, D);
    } else {
      m_ = std::max(S, D);
      n_ = std::min(S, D);
      ld_ = (n_ + 7) / 8 * 8;
      mat_.setZero(m_, ld_);
      gram_.resize(ld_, ld_);
    }
  }

  void Compute(const uint16_t* a) {
    if (path_ == CodecPath::kReference) {
      for (int64_t s = 0; s < S_; ++s) {
        for (int64_t d = 0; d < D_; ++d) a_(s, d) = HalfToFloat(a[s * D_ + d]);
      }
      Eigen::BDCSVD<Eigen::MatrixXd> svd(a_, Eigen::ComputeThinU | Eigen::ComputeThinV);
      us_ = svd.matrixU().leftCols(r_) * svd.singularValues().head(r_).asDiagonal();
      v_ = svd.matrixV().leftCols(r_);
      FixSigns();
      return;
    }
    // The tall orientation M = A (S >= D) or Aᵀ, m x n, in double.
    const bool tall = S_ >= D_;
    for (int64_t s = 0; s < S_; ++s) {
      for (int64_t d = 0; d < D_; ++d) {
        (tall ? mat_(s, d) : mat_(d, s)) = HalfToFloat(a[s * D_ + d]);
      }
    }
    if (HasAvx2Fma()) {
      GramAvx2(mat_.data(), m_, ld_, gram_.data());
    } else {
      gram_.noalias() = mat_.transpose() * mat_;
    }
    eig_.compute(gram_.topLeftCorner(n_, n_));  // eigenvalues ascending
    w_ = eig_.eigenvectors().rightCols(r_).rowwise().reverse();  // top r, descending
    p_.noalias() = mat_.leftCols(n_) * w_;                       // M·W_r = U_r(M)·Σ_r
    if (tall) {
      us_ = p_;
      v_ = w_;
      FixSigns();
      return;
    }
    // A = Mᵀ: left vectors of A are W, right vectors are P's columns normalised by σ = ‖P_i‖.
    for (int64_t i = 0; i < r_; ++i) {
      const double sigma = p_.col(i).norm();
      us_.col(i) = w_.col(i) * sigma;
      if (sigma > 0) {
        v_.col(i) = p_.col(i) / sigma;
      } else {
        v_.col(i).setZero();
      }
    }
    FixSigns();
  }

  // Singular vectors are unique up to sign. Both paths pick the sign that makes the
  // largest-magnitude entry of each US_r column positive (the first one on ties), so that they
  // write the same factors: palu_int4's asymmetric quantiser is not sign-symmetric.
  void FixSigns() {
    for (int64_t i = 0; i < r_; ++i) {
      Eigen::Index top = 0;
      us_.col(i).cwiseAbs().maxCoeff(&top);
      if (us_(top, i) < 0) {
        us_.col(i) = -us_.col(i);
        v_.col(i) = -v_.col(i);
      }
    }
  }

  const RowMatrix& us() const { return us_; }
  const RowMatrix& v() const { return v_; }

 private:
  int64_t S_, D_, r_;
  CodecPath path_;
  RowMatrix us_, v_;
  Eigen::MatrixXd a_;                                   // reference: A
  int64_t m_ = 0, n_ = 0, ld_ = 0;                      // fast: M is m x n, stored m x ld
  RowMatrix mat_, gram_, w_, p_;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig_;
};

// Runs emit(slice, factorizer) after factorising every (layer, head) slice of x; slices run in
// parallel on the fast path (one Factorizer, i.e. one set of scratch matrices, per range).
template <typename Emit>
void FactorSlices(const KvTensorView& x, CodecPath path, ThreadPool* pool, Emit emit) {
  const KvGeometry& g = x.geom;
  const int64_t r = format::PaluRank(g);
  auto run = [&](int64_t b, int64_t e) {
    Factorizer f(g.tokens, g.head_dim, r, path);
    for (int64_t t = b; t < e; ++t) {
      f.Compute(x.slice(0, t));
      emit(t, f);
    }
  };
  if (path == CodecPath::kReference) {
    run(0, g.layers * g.heads);
  } else {
    ParallelFor(pool, g.layers * g.heads, run);
  }
}

// ---- Reconstruction --------------------------------------------------------------------------

// Factor access for decode: US [S, r] fp16 row-major at `us`; Vᵀ(i, d) = vt[i·vt_i + d·vt_d]
// (palu_lr stores Vᵀ [r, D]: vt_i = D, vt_d = 1; palu_int4 stores V [D, r]: vt_i = 1, vt_d = r).
// Pointers may be unaligned.
struct SliceFactors {
  const uint8_t* us;
  const uint8_t* vt;
  int64_t vt_i, vt_d;
};

// Reference: out[s, d] = Σ_i US[s, i]·Vᵀ[i, d], fp32, i ascending from 0.
void ProductReference(const SliceFactors& f, int64_t S, int64_t D, int64_t r, uint16_t* out) {
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t d = 0; d < D; ++d) {
      float acc = 0.0f;
      for (int64_t i = 0; i < r; ++i) {
        acc += HalfToFloat(LoadU16(f.us + 2 * (s * r + i))) *
               HalfToFloat(LoadU16(f.vt + 2 * (i * f.vt_i + d * f.vt_d)));
      }
      out[s * D + d] = FloatToHalf(acc);
    }
  }
}

// The same sums, row by row: row[d] += US[s, i]·Vᵀ[i, d] for i ascending (vectorised over d; no
// FMA contraction, so each element sees exactly the reference's operations).
inline __attribute__((always_inline)) void ProductRowsBody(const float* us, const float* vt,
                                                           int64_t S, int64_t D, int64_t r,
                                                           float* row, uint16_t* out) {
  for (int64_t s = 0; s < S; ++s) {
    std::fill(row, row + D, 0.0f);
    for (int64_t i = 0; i < r; ++i) {
      const float u = us[s * r + i];
      const float* v = vt + i * D;
      for (int64_t d = 0; d < D; ++d) row[d] += u * v[d];
    }
    FloatToHalfN(row, out + s * D, D);
  }
}
void ProductRows(const float* us, const float* vt, int64_t S, int64_t D, int64_t r, float* row,
                 uint16_t* out) {
  ProductRowsBody(us, vt, S, D, r, row, out);
}
__attribute__((target("avx2,f16c"))) void ProductRowsAvx2(const float* us, const float* vt,
                                                          int64_t S, int64_t D, int64_t r,
                                                          float* row, uint16_t* out) {
  ProductRowsBody(us, vt, S, D, r, row, out);
}

// Fast path scratch per thread: US fp32 [S, r], Vᵀ fp32 [r, D], one output row, and fp16 staging.
size_t ProductScratchBytes(const KvGeometry& g) {
  const int64_t r = format::PaluRank(g);
  return Padded(4 * (g.tokens * r + r * g.head_dim + g.head_dim)) +
         Padded(2 * std::max(g.tokens, g.head_dim) * r);
}

void ProductFast(const SliceFactors& f, int64_t S, int64_t D, int64_t r, uint8_t* scratch,
                 uint16_t* out) {
  float* us = reinterpret_cast<float*>(scratch);
  float* vt = us + S * r;
  float* row = vt + r * D;
  uint16_t* stage = reinterpret_cast<uint16_t*>(scratch + Padded(4 * (S * r + r * D + D)));
  std::memcpy(stage, f.us, 2 * S * r);
  HalfToFloatN(stage, us, S * r);
  if (f.vt_d == 1) {
    std::memcpy(stage, f.vt, 2 * r * D);
    HalfToFloatN(stage, vt, r * D);
  } else {
    std::memcpy(stage, f.vt, 2 * r * D);  // V [D, r] -> Vᵀ [r, D]
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t i = 0; i < r; ++i) vt[i * D + d] = HalfToFloat(stage[d * r + i]);
    }
  }
  if (HasAvx2Fma()) {
    ProductRowsAvx2(us, vt, S, D, r, row, out);
  } else {
    ProductRows(us, vt, S, D, r, row, out);
  }
}

// ---- Codecs ----------------------------------------------------------------------------------

class PaluCodec : public CodecBase {
 public:
  using CodecBase::CodecBase;

 protected:
  int Slots(const ThreadPool* pool) const {
    return options().path == CodecPath::kReference ? 0 : PoolThreads(pool);
  }

  // Per-thread decode scratch, from the workspace.
  uint8_t* TakeScratch(const KvGeometry& g, Arena& arena, const ThreadPool* pool) const {
    return arena.Take<uint8_t>(ProductScratchBytes(g) * Slots(pool));
  }

  // Reconstructs every (layer, head) slice t of `out` from factors(t) -> SliceFactors.
  template <typename FactorsOf>
  void Reconstruct(const MutableKvTensorView& out, uint8_t* scratch, ThreadPool* pool,
                   FactorsOf factors) const {
    const KvGeometry& g = out.geom;
    const int64_t S = g.tokens, D = g.head_dim, r = format::PaluRank(g), n = g.layers * g.heads;
    if (options().path == CodecPath::kReference) {
      for (int64_t t = 0; t < n; ++t) ProductReference(factors(t), S, D, r, out.slice(0, t));
      return;
    }
    const int slots = Slots(pool);
    const size_t bytes = ProductScratchBytes(g);
    ParallelFor(pool, slots, [&](int64_t b, int64_t e) {
      for (int64_t slot = b; slot < e; ++slot) {
        for (int64_t t = n * slot / slots; t < n * (slot + 1) / slots; ++t) {
          ProductFast(factors(t), S, D, r, scratch + slot * bytes, out.slice(0, t));
        }
      }
    });
  }
};

class PaluLrCodec final : public PaluCodec {
 public:
  explicit PaluLrCodec(const CodecOptions& o) : PaluCodec(kLrInfo, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    return kSlack + ProductScratchBytes(g) * Slots(pool);
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::PaluLrBodyBytes(g);
  }

  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t>, ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const int64_t S = g.tokens, D = g.head_dim, r = format::PaluRank(g);
    const int64_t slice_bytes = 2 * format::PaluSliceValues(g), n = g.layers * g.heads;
    for (int tensor = 0; tensor < 2; ++tensor) {
      uint8_t* base = body.data() + tensor * n * slice_bytes;
      FactorSlices(tensor == 0 ? kv.k : kv.v, options().path, pool,
                   [&](int64_t t, const Factorizer& f) {
                     uint8_t* us = base + t * slice_bytes;
                     uint8_t* vt = us + 2 * S * r;
                     for (int64_t s = 0; s < S; ++s) {
                       for (int64_t i = 0; i < r; ++i) {
                         StoreU16(us + 2 * (s * r + i),
                                  FloatToHalf(static_cast<float>(f.us()(s, i))));
                       }
                     }
                     for (int64_t i = 0; i < r; ++i) {
                       for (int64_t d = 0; d < D; ++d) {
                         StoreU16(vt + 2 * (i * D + d),
                                  FloatToHalf(static_cast<float>(f.v()(d, i))));
                       }
                     }
                   });
    }
    return format::PaluLrBodyBytes(g);
  }

  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t> workspace, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const KvGeometry& g = out.geom();
    const int64_t S = g.tokens, D = g.head_dim, r = format::PaluRank(g);
    const int64_t slice_bytes = 2 * format::PaluSliceValues(g), n = g.layers * g.heads;
    Arena arena(workspace);
    uint8_t* scratch = TakeScratch(g, arena, pool);
    for (int tensor = 0; tensor < 2; ++tensor) {
      const uint8_t* base = body.data() + tensor * n * slice_bytes;
      Reconstruct(tensor == 0 ? out.k : out.v, scratch, pool, [&](int64_t t) {
        const uint8_t* us = base + t * slice_bytes;
        return SliceFactors{us, us + 2 * S * r, D, 1};
      });
    }
    return absl::OkStatus();
  }
};

class PaluInt4Codec final : public PaluCodec {
 public:
  explicit PaluInt4Codec(const CodecOptions& o) : PaluCodec(kInt4Info, o) {}

  size_t WorkspaceBytes(const KvGeometry& g, const ThreadPool* pool) const override {
    const uint64_t values = format::PaluInt4Sections(g).values;
    return kSlack + std::max(Padded(4 * values),
                             Padded(2 * values) + ProductScratchBytes(g) * Slots(pool));
  }

 protected:
  absl::StatusOr<size_t> MaxBodyBytes(const KvGeometry& g) const override {
    return format::PaluInt4BodyBytes(g);
  }

  absl::StatusOr<size_t> EncodeBody(const KvCacheView& kv, absl::Span<uint8_t> body,
                                    absl::Span<uint8_t> workspace,
                                    ThreadPool* pool) const override {
    const KvGeometry& g = kv.geom();
    const format::PaluInt4Sections sec(g);
    const int64_t S = g.tokens, D = g.head_dim, r = format::PaluRank(g);
    const int64_t slice_values = format::PaluSliceValues(g);
    Arena arena(workspace);
    float* factors = arena.Take<float>(sec.values);
    uint8_t* b = body.data();
    for (int tensor = 0; tensor < 2; ++tensor) {
      FactorSlices(tensor == 0 ? kv.k : kv.v, options().path, pool,
                   [&](int64_t t, const Factorizer& f) {
                     float* us = factors + t * slice_values;
                     float* v = us + S * r;
                     for (int64_t s = 0; s < S; ++s) {
                       for (int64_t i = 0; i < r; ++i) us[s * r + i] = static_cast<float>(f.us()(s, i));
                     }
                     for (int64_t d = 0; d < D; ++d) {
                       for (int64_t i = 0; i < r; ++i) v[d * r + i] = static_cast<float>(f.v()(d, i));
                     }
                   });
      int4g::EncodeF32(factors, sec.values, b + (tensor == 0 ? sec.k_packed() : sec.v_packed()),
                       b + (tensor == 0 ? sec.k_scales() : sec.v_scales()),
                       b + (tensor == 0 ? sec.k_zeros() : sec.v_zeros()), options().path, pool);
    }
    return sec.body();
  }

  absl::Status DecodeBody(absl::Span<const uint8_t> body, uint8_t, const MutableKvCacheView& out,
                          absl::Span<uint8_t> workspace, ThreadPool* pool,
                          absl::Span<uint8_t>) const override {
    const KvGeometry& g = out.geom();
    const format::PaluInt4Sections sec(g);
    const int64_t S = g.tokens, r = format::PaluRank(g);
    const int64_t slice_values = format::PaluSliceValues(g);
    const uint8_t* b = body.data();
    Arena arena(workspace);
    uint16_t* factors = arena.Take<uint16_t>(sec.values);
    uint8_t* scratch = TakeScratch(g, arena, pool);
    for (int tensor = 0; tensor < 2; ++tensor) {
      int4g::DecodeF16(b + (tensor == 0 ? sec.k_packed() : sec.v_packed()),
                       b + (tensor == 0 ? sec.k_scales() : sec.v_scales()),
                       b + (tensor == 0 ? sec.k_zeros() : sec.v_zeros()), sec.values, factors,
                       options().path, pool);
      Reconstruct(tensor == 0 ? out.k : out.v, scratch, pool, [&](int64_t t) {
        const uint8_t* us = reinterpret_cast<const uint8_t*>(factors + t * slice_values);
        return SliceFactors{us, us + 2 * S * r, 1, r};
      });
    }
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Codec> NewPaluLrCodec(const CodecOptions& o) {
  return std::make_unique<PaluLrCodec>(o);
}
std::unique_ptr<Codec> NewPaluInt4Codec(const CodecOptions& o) {
  return std::make_unique<PaluInt4Codec>(o);
}

}  // namespace kvs
