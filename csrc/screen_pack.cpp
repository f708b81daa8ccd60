// The screen's copies of a corpus and the per-call preparation of the queries: the power-of-two
// scaling and bf16 rounding, or the per-row int8 scaling and rounding, and the measured residuals
// that the bound of screen.h stores per row (meta) and per query (qA, qB). Generic x86-64 code: it
// runs once per corpus object or per call.
#include "screen_pack.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "screen_kernel.h"
#include "search_kernel.h"

namespace py = pybind11;

namespace densescale {
namespace {

constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff
constexpr double kInflate = 1.0 + 1.0 / (1 << 20);
constexpr double kNormLo = 0x1p-40, kNormHi = 0x1p40;  // norms the screen takes

inline double gamma(double n) { return n * kU / (1.0 - n * kU); }

// int8: the largest query unit tau = 1 / c_q = 127 / max|q_i| <= 127 sqrt(D) / |q| (|q| >= 2^-40),
// and the fp64 division x_i / c's error (< 127 2^-53 per element) on the residual's norm.
inline double int8_tau_max(int64_t D) { return 127.0 * std::sqrt(static_cast<double>(D)) * 0x1p41; }
inline double int8_division_slack(int64_t D) {
  return 127.0 * std::sqrt(static_cast<double>(D)) * 0x1p-52;
}

// v = x / c rounded to int8 (|v| <= 127 by the choice of c, at least max|x| / 127 rounded up).
inline double rint_int8(double v) { return std::min(127.0, std::max(-127.0, std::nearbyint(v))); }

// Adds the residual's and the rounded value's squares to r2 and n2; returns h.
inline double tally(double v, double h, double& r2, double& n2) {
  r2 += (v - h) * (v - h);
  n2 += h * h;
  return h;
}

inline double round_int8(double v, double& r2, double& n2) { return tally(v, rint_int8(v), r2, n2); }

// Round to fp32 upwards (the stored bound factors must never shrink).
inline float up(double x) {
  const float f = static_cast<float>(x);
  return static_cast<double>(f) >= x ? f : std::nextafter(f, std::numeric_limits<float>::infinity());
}

// bf16 round-to-nearest-even of a finite float; bf16 subnormals become 0 (AMX reads them as 0).
inline uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  uint16_t h = static_cast<uint16_t>(b >> 16);
  if ((h & 0x7f80u) == 0) h = 0;
  return h;
}

// A vector's fp64 norm and largest |x_i| (values read as fp32). False when the norm is not finite
// or is nonzero and outside [2^-40, 2^40], the range the screen takes.
template <class T>
bool measure(const T* x, int64_t n, double& norm, double& amax) {
  double s2 = 0.0;
  amax = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = to_float(x[i]);
    s2 += v * v;
    amax = std::max(amax, std::fabs(v));
  }
  norm = std::sqrt(s2);
  return std::isfinite(norm) && (norm == 0.0 || (norm >= kNormLo && norm <= kNormHi));
}

// The norms and largest |x_i| of the 16 rows of group g; good[r]: a real row inside the screen's
// range (padding and rejected rows pack as zeros). False when a real row is rejected (the corpus
// then goes to the exact kernel).
template <class T>
bool measure_group(const TopkArgs& c, int64_t g, double* norm, double* amax, bool* good) {
  const T* corpus = static_cast<const T*>(c.corpus);
  bool ok = true;
  for (int r = 0; r < 16; ++r) {
    const int64_t j = g * 16 + r;
    norm[r] = amax[r] = 0.0;
    good[r] = j < c.N && measure(corpus + j * c.corpus_stride, c.D, norm[r], amax[r]);
    ok = ok && (j >= c.N || good[r]);
  }
  return ok;
}

// Row j's four bound factors (screen.h): w, a = w rho + kappa rhat |x|, b = w nu and the
// underflow term d, the last three inflated and rounded up.
inline void put_meta(float* meta, int64_t Np, int64_t j, double w, double a, double b, double d) {
  meta[j] = static_cast<float>(w);
  meta[Np + j] = up(a * kInflate);
  meta[2 * Np + j] = up(b * kInflate);
  meta[3 * Np + j] = up(std::max(d, 0x1p-120) * kInflate);
}

// Scale x (n values, read as fp32) by 2^e with |x| 2^e in [0.5, 1), round to bf16, measure the
// residual. Writes the n bf16 values through put(i, bits). Returns false when |x| is not finite or
// outside [2^-40, 2^40] (and not 0). norm / scale / rho / nu are fp64.
template <class T, class Put>
bool prep_vector(const T* x, int64_t n, Put put, double& norm, double& scale, double& rho,
                 double& nu) {
  double amax;
  rho = nu = 0.0;
  scale = 1.0;
  if (!measure(x, n, norm, amax)) return false;
  if (norm == 0.0) {
    for (int64_t i = 0; i < n; ++i) put(i, 0);
    return true;
  }
  scale = std::ldexp(1.0, -std::ilogb(norm) - 1);
  double r2 = 0.0, n2 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(to_float(x[i])) * scale;
    const uint16_t h = to_bf16(static_cast<float>(v));
    tally(v, bf16_to_float(h), r2, n2);
    put(i, h);
  }
  const double fp64 = 1.0 + 0x1p-30;  // covers the fp64 rounding of the sums above
  norm *= fp64;
  rho = std::sqrt(r2) * fp64;
  nu = std::sqrt(n2) * fp64;
  return true;
}

// Groups of 16 rows in parallel: each row's norm first, then the tiles written in order (the group
// is 48 KiB of fp32 at D = 768, so the second pass reads from L1 / L2).
template <class T>
bool pack_rows(const TopkArgs& c, const float* row_scale, uint16_t* cpack, float* meta, int64_t Np,
               int64_t Dp, int threads) {
  const T* corpus = static_cast<const T*>(c.corpus);
  const int64_t D = c.D, nkc = Dp / 32, groups = Np / 16;
  const double g_d = gamma(static_cast<double>(D)), kappa = g_d + 2 * kU;
  const double tau_max = 0x1p41;
  const double fp64 = 1.0 + 0x1p-30;  // covers the fp64 rounding of the sums below
  int ok = 1;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(&& : ok)
  for (int64_t g = 0; g < groups; ++g) {
    double norm[16], amax[16], scale[16], r2[16] = {}, n2[16] = {};
    bool good[16];
    if (!measure_group<T>(c, g, norm, amax, good)) ok = 0;
    for (int r = 0; r < 16; ++r)  // zero rows pack as zeros
      scale[r] = good[r] && norm[r] != 0.0 ? std::ldexp(1.0, -std::ilogb(norm[r]) - 1) : 0.0;
    uint16_t* out = cpack + g * nkc * 512;
    for (int64_t ch = 0; ch < nkc; ++ch)
      for (int p = 0; p < 16; ++p)
        for (int r = 0; r < 16; ++r) {
          const T* x = corpus + (g * 16 + r) * c.corpus_stride;
          for (int e = 0; e < 2; ++e) {
            const int64_t d = ch * 32 + 2 * p + e;
            uint16_t h = 0;
            if (good[r] && d < D && scale[r] != 0.0) {
              const double v = static_cast<double>(to_float(x[d])) * scale[r];
              h = to_bf16(static_cast<float>(v));
              tally(v, bf16_to_float(h), r2[r], n2[r]);
            }
            *out++ = h;
          }
        }
    for (int r = 0; r < 16; ++r) {
      const int64_t j = g * 16 + r;
      meta[j] = meta[Np + j] = meta[2 * Np + j] = meta[3 * Np + j] = 0.f;
      if (!good[r]) continue;
      const double rhat = row_scale ? static_cast<double>(row_scale[j]) : 1.0;
      if (!std::isfinite(rhat)) {
        ok = 0;
        continue;
      }
      const double sc = scale[r] != 0.0 ? scale[r] : 1.0;
      const double w = rhat / sc, nrm = norm[r] * fp64;
      const double rho = std::sqrt(r2[r]) * fp64, nu = std::sqrt(n2[r]) * fp64;
      const double absterm = 4.0 * rhat * D * 0x1p-126 * tau_max + 4.0 * w * 2 * D * 0x1p-126;
      // w is exact in fp32: an fp32 times a power of two
      put_meta(meta, Np, j, w, w * rho + kappa * rhat * nrm, w * nu, absterm);
    }
  }
  return ok != 0;
}

// The int8 copy (screen.h, "The int8 format"): per row c = max|x| / 127 rounded up to fp32, x~ =
// rint(x / c) stored as x~ + 128 in the VPDPBUSD layout (packed_index8), the same four bound
// factors with w = rhat c. Rows are checked as in pack_rows.
template <class T>
bool pack_rows_int8(const TopkArgs& c, const float* row_scale, uint8_t* c8, float* meta,
                    int64_t Np, int64_t Dp, int threads) {
  const T* corpus = static_cast<const T*>(c.corpus);
  const int64_t D = c.D, nkc = Dp / 64, groups = Np / 16;
  const double g_d = gamma(static_cast<double>(D)), kappa = g_d + 2 * kU;
  const double tau_max = int8_tau_max(D), div_slack = int8_division_slack(D);
  const double fp64 = 1.0 + 0x1p-30;
  int ok = 1;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(&& : ok)
  for (int64_t g = 0; g < groups; ++g) {
    double norm[16], amax[16], scale[16], r2[16] = {}, n2[16] = {};
    bool good[16];
    if (!measure_group<T>(c, g, norm, amax, good)) ok = 0;
    for (int r = 0; r < 16; ++r) scale[r] = good[r] && norm[r] != 0.0 ? up(amax[r] / 127.0) : 0.0;
    uint8_t* out = c8 + g * nkc * 1024;
    for (int64_t ch = 0; ch < nkc; ++ch)
      for (int p = 0; p < 16; ++p)
        for (int r = 0; r < 16; ++r) {
          const T* x = corpus + (g * 16 + r) * c.corpus_stride;
          for (int e = 0; e < 4; ++e) {
            const int64_t d = ch * 64 + 4 * p + e;
            double h = 0.0;
            if (good[r] && d < D && scale[r] != 0.0)
              h = round_int8(static_cast<double>(to_float(x[d])) / scale[r], r2[r], n2[r]);
            *out++ = static_cast<uint8_t>(static_cast<int>(h) + 128);
          }
        }
    for (int r = 0; r < 16; ++r) {
      const int64_t j = g * 16 + r;
      meta[j] = meta[Np + j] = meta[2 * Np + j] = meta[3 * Np + j] = 0.f;
      if (!good[r]) continue;
      const double rhat = row_scale ? static_cast<double>(row_scale[j]) : 1.0;
      if (!std::isfinite(rhat)) {
        ok = 0;
        continue;
      }
      const double w = rhat * (scale[r] != 0.0 ? scale[r] : 1.0), nrm = norm[r] * fp64;
      const double rho = scale[r] != 0.0 ? std::sqrt(r2[r]) * fp64 + div_slack : 0.0;
      const double nu = std::sqrt(n2[r]) * fp64;
      const double absterm = 4.0 * rhat * D * 0x1p-126 * tau_max;
      // w is rounded to fp32: a relative error u on S, see screen.h
      put_meta(meta, Np, j, w, w * rho + kappa * rhat * nrm, w * nu, absterm);
    }
  }
  return ok != 0;
}

}  // namespace

py::bool_ screen_pack(uintptr_t corpus, int64_t N, int64_t D, int64_t corpus_stride, int ctype,
                      uintptr_t row_scale, uintptr_t cpack, uintptr_t meta, int64_t Np, int64_t Dp,
                      int threads, const std::string& format) {
  const bool int8 = format == "int8";
  if (!int8 && format != "bf16")
    throw py::value_error("screen_pack: format must be 'bf16' or 'int8', got '" + format + "'");
  if (N < 1 || D < 1 || corpus_stride < D || Np < N || Np % 32 || Dp < D || Dp % (int8 ? 64 : 32) ||
      (int8 && Dp > 65536))
    throw py::value_error("screen_pack: inconsistent sizes");
  if (!corpus || !cpack || !meta) throw py::value_error("screen_pack: null buffer");
  TopkArgs c;
  c.corpus = reinterpret_cast<const void*>(corpus);
  c.N = N;
  c.D = D;
  c.corpus_stride = corpus_stride;
  const float* rs = row_scale ? reinterpret_cast<const float*>(row_scale) : nullptr;
  auto* cp = reinterpret_cast<uint16_t*>(cpack);
  auto* mt = reinterpret_cast<float*>(meta);
  const int T_ = resolve_threads(threads);
  bool ok;
  {
    py::gil_scoped_release release;
    auto* c8 = reinterpret_cast<uint8_t*>(cpack);
    switch (ctype * 2 + int8) {
      case 0: ok = pack_rows<float>(c, rs, cp, mt, Np, Dp, T_); break;
      case 1: ok = pack_rows_int8<float>(c, rs, c8, mt, Np, Dp, T_); break;
      case 2: ok = pack_rows<F16>(c, rs, cp, mt, Np, Dp, T_); break;
      case 3: ok = pack_rows_int8<F16>(c, rs, c8, mt, Np, Dp, T_); break;
      case 4: ok = pack_rows<BF16>(c, rs, cp, mt, Np, Dp, T_); break;
      case 5: ok = pack_rows_int8<BF16>(c, rs, c8, mt, Np, Dp, T_); break;
      default: throw py::value_error("corpus_type must be 0, 1 or 2");
    }
  }
  return py::bool_(ok);
}

Prepared prep_queries(const float* q, int64_t M, int64_t D, int64_t Dp, int threads,
                      QueryCode code) {
  const bool int8 = code != QueryCode::Bf16, pairs = code == QueryCode::Int8Pairs;
  const int64_t Mp = (M + 31) / 32 * 32;
  Prepared p;
  if (int8) {
    p.q8.assign(Mp * Dp, 0);
    p.qcorr.assign(Mp, 0);
  } else {
    p.qpack.assign(Mp * Dp, 0);
  }
  p.qA.assign(Mp, 0.f);
  p.qB.assign(Mp, 0.f);
  p.tau.assign(Mp, 1.0);
  p.skip.assign(Mp, 1);
  const double g2d = gamma(2.0 * static_cast<double>(D)), div_slack = int8_division_slack(D);
  const double fp64 = 1.0 + 0x1p-30;
#pragma omp parallel for schedule(static) num_threads(threads) if (M >= 256)
  for (int64_t m = 0; m < M; ++m) {
    const float* x = q + m * D;
    if (int8) {
      double norm, amax;
      // A zero query scores 0 everywhere: every row ties, the screen cannot help.
      if (!measure(x, D, norm, amax) || norm == 0.0) continue;
      double pmax = 0.0;  // the largest |q_2i| + |q_2i+1|
      for (int64_t i = 0; pairs && i < D; i += 2)
        pmax = std::max(pmax, std::fabs(x[i]) + (i + 1 < D ? std::fabs(x[i + 1]) : 0.0));
      const double cq = up(std::max(amax / 127.0, pmax / 128.0));
      double r2 = 0.0, n2 = 0.0;
      int64_t sum = 0;
      for (int64_t i = 0; i < D; i += 2) {
        const double v0 = x[i] / cq, v1 = i + 1 < D ? x[i + 1] / cq : 0.0;
        double h[2] = {rint_int8(v0), rint_int8(v1)};
        // |v0| + |v1| <= 128 by the choice of c_q; rounding both up can pass it by 1
        while (pairs && std::fabs(h[0]) + std::fabs(h[1]) > 128.0) {
          double& big = std::fabs(h[0]) >= std::fabs(h[1]) ? h[0] : h[1];
          big -= std::copysign(1.0, big);
        }
        for (int e = 0; e < 2 && i + e < D; ++e) {
          tally(e ? v1 : v0, h[e], r2, n2);
          sum += static_cast<int64_t>(h[e]);
          p.q8[query_index8(m, i + e, Dp)] = static_cast<int8_t>(h[e]);
        }
      }
      const double rho = std::sqrt(r2) * fp64 + div_slack, nu = std::sqrt(n2) * fp64;
      p.qA[m] = up(norm * fp64 / cq * kInflate);
      p.qB[m] = up((rho + 0x1p-20 * nu) * kInflate);
      p.qcorr[m] = static_cast<int32_t>(128 * sum);
      p.tau[m] = 1.0 / cq;
      p.skip[m] = 0;
      continue;
    }
    uint16_t* row = p.qpack.data() + m * Dp;
    double norm, scale, rho, nu;
    const bool good =
        prep_vector(x, D, [&](int64_t i, uint16_t h) { row[i] = h; }, norm, scale, rho, nu);
    if (!good || norm == 0.0) {
      std::fill(row, row + Dp, uint16_t{0});
      continue;
    }
    p.qA[m] = up(norm * scale * kInflate);
    p.qB[m] = up((rho + (g2d + 0x1p-20) * nu) * kInflate);
    p.tau[m] = scale;
    p.skip[m] = 0;
  }
  return p;
}

}  // namespace densescale
