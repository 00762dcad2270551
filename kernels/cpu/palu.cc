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
// reference to its float32 SVD precision, up to sign. Signs are canonical here (the
// largest-magnitude entry of each US_r column is positive) where the reference takes LAPACK's.
// palu_lr's output does not depend on them; palu_int4's does, because the asymmetric INT4
// quantiser is not sign-symmetric: it has the reference's error level but not its exact values
// (the reference's own palu_int4 error is 0.6-1.9 relative Frobenius on the golden inputs).
//
// Paths: the reference runs Eigen's BDCSVD (Jacobi below 16 columns) per slice on one thread.
// The fast path runs slices in parallel and computes the same truncation from the Gram matrix of
// the tall orientation M (M = A when S >= D, else Aᵀ; n = min(S, D)): G = MᵀM (n x n, double,
// AVX2/FMA kernel); the eigenvectors W_r of its r largest eigenvalues (TopEigenvectors below:
// tridiagonalisation, bisection, inverse iteration; Eigen's full solver as fallback) are the
// top-r right singular vectors of M, and P = M·W_r (AVX2/FMA) = (left vectors)·Σ_r. In double
// this matches the SVD to ~1e-12 (error ≈ ε·σ₁²/gap), far below fp16 resolution, so both paths
// write the same factors but for rare last-bit cases. The decoders of both paths compute the
// same fp32 sums in the same order and give identical bits.
//
// Allocation: the encoder allocates its SVD scratch (Eigen matrices, a few per thread and call);
// the codec API allows this for palu only. Decode uses the caller's workspace.
// Cost: O(S·D·n + n³) per slice; compute-bound, unlike every other codec.
#include <immintrin.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/half/half.h"
#include "kernels/cpu/codec_base.h"
#include "kernels/cpu/cpu_util.h"
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

// P = M·W for M [m, ld] and W [ld, rp] row-major, rp a multiple of 8 (zero-padded), P [m, rp]:
// tiles of 4 rows x 8 columns accumulate over ld in registers; the last m % 4 rows one at a time.
__attribute__((target("avx2,fma"))) void MatMulAvx2(const double* M, int64_t m, int64_t ld,
                                                    const double* W, int64_t rp, double* P) {
  for (int64_t c0 = 0; c0 < rp; c0 += 8) {
    int64_t k0 = 0;
    for (; k0 + 4 <= m; k0 += 4) {
      __m256d acc[4][2];
      for (auto& a : acc) a[0] = a[1] = _mm256_setzero_pd();
      for (int64_t d = 0; d < ld; ++d) {
        const __m256d w0 = _mm256_loadu_pd(W + d * rp + c0);
        const __m256d w1 = _mm256_loadu_pd(W + d * rp + c0 + 4);
        for (int kk = 0; kk < 4; ++kk) {
          const __m256d a = _mm256_broadcast_sd(M + (k0 + kk) * ld + d);
          acc[kk][0] = _mm256_fmadd_pd(a, w0, acc[kk][0]);
          acc[kk][1] = _mm256_fmadd_pd(a, w1, acc[kk][1]);
        }
      }
      for (int kk = 0; kk < 4; ++kk) {
        _mm256_storeu_pd(P + (k0 + kk) * rp + c0, acc[kk][0]);
        _mm256_storeu_pd(P + (k0 + kk) * rp + c0 + 4, acc[kk][1]);
      }
    }
    for (; k0 < m; ++k0) {
      __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
      for (int64_t d = 0; d < ld; ++d) {
        const __m256d a = _mm256_broadcast_sd(M + k0 * ld + d);
        acc0 = _mm256_fmadd_pd(a, _mm256_loadu_pd(W + d * rp + c0), acc0);
        acc1 = _mm256_fmadd_pd(a, _mm256_loadu_pd(W + d * rp + c0 + 4), acc1);
      }
      _mm256_storeu_pd(P + k0 * rp + c0, acc0);
      _mm256_storeu_pd(P + k0 * rp + c0 + 4, acc1);
    }
  }
}

// Number of eigenvalues below x[k] of the symmetric tridiagonal T (diagonal d, squared
// off-diagonal e2), for kLanes values of x at once: the Sturm sequence q_i = d_i - x - e2_(i-1) /
// q_(i-1), counting negative q_i, with |q| < pivmin replaced by -pivmin (LAPACK dstebz). The
// lanes are independent chains, which hides the division latency.
constexpr int kLanes = 8;
inline __attribute__((always_inline)) void SturmCountsBody(const double* d, const double* e2,
                                                           int64_t n, double pivmin,
                                                           const double* x, int64_t* count) {
  double q[kLanes];
  int64_t c[kLanes];
  for (int k = 0; k < kLanes; ++k) {
    q[k] = d[0] - x[k];
    q[k] = std::fabs(q[k]) < pivmin ? -pivmin : q[k];
    c[k] = q[k] < 0;
  }
  for (int64_t i = 1; i < n; ++i) {
    for (int k = 0; k < kLanes; ++k) {
      q[k] = (d[i] - x[k]) - e2[i - 1] / q[k];
      q[k] = std::fabs(q[k]) < pivmin ? -pivmin : q[k];
      c[k] += q[k] < 0;
    }
  }
  for (int k = 0; k < kLanes; ++k) count[k] = c[k];
}
void SturmCounts(const double* d, const double* e2, int64_t n, double pivmin, const double* x,
                 int64_t* count) {
  SturmCountsBody(d, e2, n, pivmin, x, count);
}
__attribute__((target("avx2,fma"))) void SturmCountsAvx2(const double* d, const double* e2,
                                                         int64_t n, double pivmin,
                                                         const double* x, int64_t* count) {
  SturmCountsBody(d, e2, n, pivmin, x, count);
}

// The eigenvectors of the r largest eigenvalues (descending) of a symmetric n x n matrix G, for
// the fast path: Householder tridiagonalisation T = QᵀGQ (Eigen), the r eigenvalues of T by
// bisection to ε·‖T‖, their eigenvectors by inverse iteration (vectors of eigenvalues closer than
// 1e-3·‖T‖ reorthogonalised, as LAPACK dstein), back-transformed by Q. About 4x faster than
// Eigen's full QR solver at n = 128, which accumulates all n eigenvectors. Compute() checks the
// residuals and orthogonality of what it found and returns false when they are not at working
// precision (for instance in large clusters of equal eigenvalues); the caller then runs the full
// solver.
class TopEigenvectors {
 public:
  bool Compute(const Eigen::Ref<const RowMatrix>& g, int64_t r, RowMatrix* w) {
    const int64_t n = g.rows();
    if (n < 2) return false;
    tri_.compute(g);
    d_ = tri_.diagonal();
    e_ = tri_.subDiagonal();
    e2_ = e_.cwiseAbs2();
    double norm = 0;  // ‖T‖_∞, and the Gershgorin interval [lo, hi]
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const double off = (i > 0 ? std::fabs(e_[i - 1]) : 0) + (i + 1 < n ? std::fabs(e_[i]) : 0);
      norm = std::max(norm, std::fabs(d_[i]) + off);
      lo = std::min(lo, d_[i] - off);
      hi = std::max(hi, d_[i] + off);
    }
    if (!(norm > 0) || !std::isfinite(norm)) return false;  // zero or non-finite: full solver
    constexpr double kEps = std::numeric_limits<double>::epsilon();
    const double pivmin = std::max(std::numeric_limits<double>::min(),
                                   std::numeric_limits<double>::min() * e2_.maxCoeff());
    const double abstol = 2 * kEps * norm;
    lo -= abstol;
    hi += abstol;
    // Bisection: lambda_j, the (n-1-j)-th smallest eigenvalue, j < r, kLanes at a time.
    lambda_.resize(r);
    for (int64_t j0 = 0; j0 < r; j0 += kLanes) {
      double a[kLanes], b[kLanes], x[kLanes];
      int64_t count[kLanes];
      for (int k = 0; k < kLanes; ++k) a[k] = lo, b[k] = hi;
      for (int iter = 0; iter < 128; ++iter) {
        bool done = true;
        for (int k = 0; k < kLanes; ++k) {
          x[k] = 0.5 * (a[k] + b[k]);
          done &= b[k] - a[k] <= abstol + 2 * kEps * std::max(std::fabs(a[k]), std::fabs(b[k]));
        }
        if (done) break;
        if (HasAvx2F16cFma()) {
          SturmCountsAvx2(d_.data(), e2_.data(), n, pivmin, x, count);
        } else {
          SturmCounts(d_.data(), e2_.data(), n, pivmin, x, count);
        }
        for (int k = 0; k < kLanes; ++k) {
          const int64_t target = n - 1 - std::min(j0 + k, r - 1);  // ascending index
          (count[k] <= target ? a[k] : b[k]) = x[k];
        }
      }
      for (int k = 0; k < kLanes && j0 + k < r; ++k) lambda_[j0 + k] = 0.5 * (a[k] + b[k]);
    }
    // Inverse iteration on T - lambda I.
    z_.resize(n, r);
    const double sep = 10 * kEps * norm, ortol = 1e-3 * norm;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    int64_t cluster = 0;
    for (int64_t j = 0; j < r; ++j) {
      double lambda = lambda_[j];
      if (j > 0 && lambda_[j - 1] - lambda > ortol) cluster = j;
      if (j > 0 && lambda >= shifted_ - sep) lambda = shifted_ - sep;
      shifted_ = lambda;
      Factor(lambda, norm);
      Eigen::VectorXd& x = x_;
      x.resize(n);
      for (int64_t i = 0; i < n; ++i) {  // a fixed pseudo-random start
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = static_cast<double>(seed >> 11) * 0x1.0p-53 - 0.5;
      }
      for (int iter = 0; iter < 3; ++iter) {
        Solve(x);
        for (int64_t c = cluster; c < j; ++c) x -= z_.col(c).dot(x) * z_.col(c);
        const double len = x.norm();
        if (!(len > 0) || !std::isfinite(len)) return false;
        x /= len;
      }
      z_.col(j) = x;
    }
    // Residuals ‖Tz - lambda z‖ and orthogonality at working precision, or give up.
    for (int64_t j = 0; j < r; ++j) {
      double res = 0;
      for (int64_t i = 0; i < n; ++i) {
        double t = (d_[i] - lambda_[j]) * z_(i, j);
        if (i > 0) t += e_[i - 1] * z_(i - 1, j);
        if (i + 1 < n) t += e_[i] * z_(i + 1, j);
        res += t * t;
      }
      if (!(std::sqrt(res) <= 1e-10 * norm)) return false;
    }
    const Eigen::MatrixXd gram = z_.transpose() * z_;
    if (!((gram - Eigen::MatrixXd::Identity(r, r)).cwiseAbs().maxCoeff() <= 1e-10)) return false;
    *w = tri_.matrixQ() * z_;
    return true;
  }

 private:
  // LU factorisation with partial pivoting of T - lambda I (LAPACK dgttrf), zero pivots replaced
  // by a tiny one.
  void Factor(double lambda, double norm) {
    const int64_t n = d_.size();
    dl_ = e_;
    du_ = e_;
    dd_ = d_.array() - lambda;
    du2_.setZero(std::max<int64_t>(n - 2, 0));
    swap_.assign(n, false);
    for (int64_t i = 0; i + 1 < n; ++i) {
      if (std::fabs(dd_[i]) >= std::fabs(dl_[i])) {
        if (dd_[i] != 0) {
          const double f = dl_[i] / dd_[i];
          dl_[i] = f;
          dd_[i + 1] -= f * du_[i];
        }
      } else {
        const double f = dd_[i] / dl_[i];
        dd_[i] = dl_[i];
        dl_[i] = f;
        const double t = du_[i];
        du_[i] = dd_[i + 1];
        dd_[i + 1] = t - f * dd_[i + 1];
        if (i + 2 < n) {
          du2_[i] = du_[i + 1];
          du_[i + 1] = -f * du_[i + 1];
        }
        swap_[i] = true;
      }
    }
    const double tiny = std::numeric_limits<double>::epsilon() * norm;
    for (int64_t i = 0; i < n; ++i) {
      if (std::fabs(dd_[i]) < tiny) dd_[i] = dd_[i] < 0 ? -tiny : tiny;
    }
  }
  // x := (T - lambda I)^-1 x with the factors of Factor().
  void Solve(Eigen::VectorXd& x) const {
    const int64_t n = x.size();
    for (int64_t i = 0; i + 1 < n; ++i) {
      if (swap_[i]) {
        const double t = x[i];
        x[i] = x[i + 1];
        x[i + 1] = t - dl_[i] * x[i + 1];
      } else {
        x[i + 1] -= dl_[i] * x[i];
      }
    }
    for (int64_t i = n - 1; i >= 0; --i) {
      double t = x[i];
      if (i + 1 < n) t -= du_[i] * x[i + 1];
      if (i + 2 < n) t -= du2_[i] * x[i + 2];
      x[i] = t / dd_[i];
    }
  }

  Eigen::Tridiagonalization<Eigen::MatrixXd> tri_;
  Eigen::VectorXd d_, e_, e2_, lambda_, x_, dl_, du_, du2_, dd_;
  std::vector<bool> swap_;
  Eigen::MatrixXd z_;
  double shifted_ = 0;
};

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
    if (HasAvx2F16cFma()) {
      GramAvx2(mat_.data(), m_, ld_, gram_.data());
    } else {
      gram_.noalias() = mat_.transpose() * mat_;
    }
    if (!top_.Compute(gram_.topLeftCorner(n_, n_), r_, &w_)) {
      eig_.compute(gram_.topLeftCorner(n_, n_));                   // eigenvalues ascending
      w_ = eig_.eigenvectors().rightCols(r_).rowwise().reverse();  // top r, descending
    }
    // P = M·W_r = U_r(M)·Σ_r.
    if (HasAvx2F16cFma()) {
      const int64_t rp = (r_ + 7) / 8 * 8;
      wpad_.setZero(ld_, rp);
      wpad_.topLeftCorner(n_, r_) = w_;
      ppad_.resize(m_, rp);
      MatMulAvx2(mat_.data(), m_, ld_, wpad_.data(), rp, ppad_.data());
      p_ = ppad_.leftCols(r_);
    } else {
      p_.noalias() = mat_.leftCols(n_) * w_;
    }
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
  RowMatrix mat_, gram_, w_, p_, wpad_, ppad_;
  TopEigenvectors top_;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig_;  // fallback
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
  return AlignedBytes(4 * (g.tokens * r + r * g.head_dim + g.head_dim)) +
         AlignedBytes(2 * std::max(g.tokens, g.head_dim) * r);
}

void ProductFast(const SliceFactors& f, int64_t S, int64_t D, int64_t r, uint8_t* scratch,
                 uint16_t* out) {
  float* us = reinterpret_cast<float*>(scratch);
  float* vt = us + S * r;
  float* row = vt + r * D;
  uint16_t* stage = reinterpret_cast<uint16_t*>(scratch + AlignedBytes(4 * (S * r + r * D + D)));
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
  if (HasAvx2F16cFma()) {
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
  uint8_t* TakeScratch(const KvGeometry& g, WorkspaceArena& arena, const ThreadPool* pool) const {
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
    return kWorkspaceSlack + ProductScratchBytes(g) * Slots(pool);
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
    WorkspaceArena arena(workspace);
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
    return kWorkspaceSlack + std::max(AlignedBytes(4 * values),
                             AlignedBytes(2 * values) + ProductScratchBytes(g) * Slots(pool));
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
    WorkspaceArena arena(workspace);
    float* factors = arena.Take<float>(sec.values);
    uint8_t* b = body.data();
    for (int tensor = 0; tensor < 2; ++tensor) {
      FactorSlices(tensor == 0 ? kv.k : kv.v, options().path, pool,
                   [&](int64_t t, const Factorizer& f) {
                     float* us = factors + t * slice_values;
                     float* v = us + S * r;
                     for (int64_t s = 0; s < S; ++s) {
                       for (int64_t i = 0; i < r; ++i) {
                         us[s * r + i] = static_cast<float>(f.us()(s, i));
                       }
                     }
                     for (int64_t d = 0; d < D; ++d) {
                       for (int64_t i = 0; i < r; ++i) {
                         v[d * r + i] = static_cast<float>(f.v()(d, i));
                       }
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
    WorkspaceArena arena(workspace);
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
