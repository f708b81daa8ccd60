// AVX2/FMA kernels of the fused contrastive loss (compiled with -mavx2 -mfma, chosen at run time).
// Everything ISA-specific stays in the anonymous namespace (see CMakeLists.txt).
#include <immintrin.h>

#include <cmath>

#include "contrastive_loss.h"

namespace densescale {
namespace loss {
namespace {

constexpr int MR = 6;     // rows of the register tile
constexpr int NR = 16;    // columns: two ymm vectors, so 12 accumulators + 2 B vectors
constexpr long KC = 256;  // depth block: a KC x NR strip of B (16 KiB) stays in L1

// Lane mask for the first n (< 8) lanes of a ymm load/store.
inline __m256i tail_mask(long n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)), idx);
}

inline __m256 load(const float* p, long n, __m256i mk) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk);
}
inline void store(float* p, long n, __m256i mk, __m256 v) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, mk, v);
}

template <int M>
void micro(long K, const float* a, long a_rs, long a_cs, const float* b, long ldb, float* c,
           long ldc, long nv, float alpha, bool acc) {
  const long n0 = nv, n1 = nv - 8;
  const __m256i m0 = tail_mask(n0 > 0 ? n0 : 0), m1 = tail_mask(n1 > 0 ? n1 : 0);
  __m256 c0[M], c1[M];
  _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) c0[m] = c1[m] = _mm256_setzero_ps();
  for (long k = 0; k < K; ++k) {
    const __m256 b0 = load(b + k * ldb, n0, m0);
    const __m256 b1 = n1 > 0 ? load(b + k * ldb + 8, n1, m1) : _mm256_setzero_ps();
    const float* ak = a + k * a_cs;
    _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) {
      const __m256 av = _mm256_broadcast_ss(ak + m * a_rs);
      c0[m] = _mm256_fmadd_ps(av, b0, c0[m]);
      c1[m] = _mm256_fmadd_ps(av, b1, c1[m]);
    }
  }
  const __m256 al = _mm256_set1_ps(alpha);
  _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) {
    float* cm = c + m * ldc;
    __m256 r0 = _mm256_mul_ps(al, c0[m]), r1 = _mm256_mul_ps(al, c1[m]);
    if (acc) r0 = _mm256_add_ps(r0, load(cm, n0, m0));
    store(cm, n0, m0, r0);
    if (n1 > 0) {
      if (acc) r1 = _mm256_add_ps(r1, load(cm + 8, n1, m1));
      store(cm + 8, n1, m1, r1);
    }
  }
}

using MicroFn = void (*)(long, const float*, long, long, const float*, long, float*, long, long,
                         float, bool);
constexpr MicroFn kMicro[MR + 1] = {nullptr, micro<1>, micro<2>, micro<3>,
                                    micro<4>, micro<5>, micro<6>};

void gemm(long M, long N, long K, const float* a, long a_rs, long a_cs, const float* b, long ldb,
          float* c, long ldc, float alpha, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (long m = 0; m < M; ++m)
        for (long n = 0; n < N; ++n) c[m * ldc + n] = 0.f;
    return;
  }
  for (long k0 = 0; k0 < K; k0 += KC) {
    const long kc = K - k0 < KC ? K - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (long n0 = 0; n0 < N; n0 += NR) {
      const long nv = N - n0 < NR ? N - n0 : NR;
      const float* bk = b + k0 * ldb + n0;
      for (long m0 = 0; m0 < M; m0 += MR) {
        const long mm = M - m0 < MR ? M - m0 : MR;
        kMicro[mm](kc, a + m0 * a_rs + k0 * a_cs, a_rs, a_cs, bk, ldb, c + m0 * ldc + n0, ldc, nv,
                   alpha, acc);
      }
    }
  }
}

// exp(x) = 2^n * e^r, n = round(x / ln 2), degree-6 polynomial for e^r; x < -87 (and -inf) -> 0.
inline __m256 exp8(__m256 x) {
  const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y =
      _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

// NaN-sticky max (contract in contrastive_loss.h): maxps(v, mx) returns mx when either is NaN,
// so a NaN mx stays; a NaN or -inf v (not greater than -inf) ORs in all-ones bits, a NaN.
void col_max(const float* x, long nj, long n, long ldx, float* mx) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (long j = 0; j < nj; ++j) {
    const float* xj = x + j * ldx;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(xj + i);
      const __m256 bad = _mm256_cmp_ps(v, ninf, _CMP_NGT_UQ);
      _mm256_storeu_ps(mx + i, _mm256_or_ps(_mm256_max_ps(v, _mm256_loadu_ps(mx + i)), bad));
    }
    for (; i < n; ++i) {
      const float v = xj[i];
      mx[i] = !(v > -INFINITY) ? NAN : (v > mx[i] ? v : mx[i]);
    }
  }
}

void col_sumexp(const float* x, long nj, long n, long ldx, const float* mx, float* sum) {
  for (long j = 0; j < nj; ++j) {
    const float* xj = x + j * ldx;
    long i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(sum + i, _mm256_add_ps(_mm256_loadu_ps(sum + i),
                                              exp8(_mm256_sub_ps(_mm256_loadu_ps(xj + i),
                                                                 _mm256_loadu_ps(mx + i)))));
    for (; i < n; ++i) sum[i] += std::exp(xj[i] - mx[i]);
  }
}

void grad_rows(float* x, long nj, long n, long ldx, const float* lse, const float* w,
               const float* jlse, const float* jw) {
  for (long j = 0; j < nj; ++j) {
    float* xj = x + j * ldx;
    const bool col = jw != nullptr && jw[j] != 0.f;
    const float cl = col ? jlse[j] : 0.f, cw = col ? jw[j] : 0.f;
    const __m256 vcl = _mm256_set1_ps(cl), vcw = _mm256_set1_ps(cw);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(xj + i);
      __m256 g = _mm256_mul_ps(_mm256_loadu_ps(w + i),
                               exp8(_mm256_sub_ps(v, _mm256_loadu_ps(lse + i))));
      if (col) g = _mm256_fmadd_ps(vcw, exp8(_mm256_sub_ps(v, vcl)), g);
      _mm256_storeu_ps(xj + i, g);
    }
    for (; i < n; ++i) {
      const float v = xj[i];
      xj[i] = w[i] * std::exp(v - lse[i]) + (col ? cw * std::exp(v - cl) : 0.f);
    }
  }
}

float row_max(const float* x, long n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  long i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float t[8];
  _mm256_store_ps(t, m);
  float r = t[0];
  for (int k = 1; k < 8; ++k) r = t[k] > r ? t[k] : r;
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

float row_sumexp(const float* x, long n, float mx) {
  __m256 s = _mm256_setzero_ps();
  const __m256 m = _mm256_set1_ps(mx);
  long i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m)));
  alignas(32) float t[8];
  _mm256_store_ps(t, s);
  float r = 0.f;
  for (int k = 0; k < 8; ++k) r += t[k];
  for (; i < n; ++i) r += std::exp(x[i] - mx);
  return r;
}

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k{"avx2", MR, gemm, col_max, col_sumexp, grad_rows, row_max, row_sumexp};
  return k;
}

}  // namespace loss
}  // namespace densescale
