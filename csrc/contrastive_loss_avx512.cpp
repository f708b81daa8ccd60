// AVX-512 kernels of the fused contrastive loss (compiled with -mavx512f/bw/vl/dq, chosen at run
// time). Everything ISA-specific stays in the anonymous namespace (see CMakeLists.txt).
#include <immintrin.h>

#include <cfloat>
#include <cmath>
#include <array>
#include <utility>

#include "contrastive_loss.h"

namespace densescale {
namespace loss {
namespace {

constexpr int MR = 8;     // rows of the register tile
constexpr int NR = 32;    // columns: two zmm vectors, so 16 accumulators + 2 B vectors in registers
constexpr long KC = 128;  // depth block: KC x N of B (N <= ~768) stays in L2

inline __mmask16 tail_mask(long n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// C tile (M x nv, nv <= NR) = (acc ? C : 0) + alpha * A(M x K) B(K x nv), A packed [k][MR].
template <int M>
void micro(long K, const float* ap, const float* b, long ldb, float* c, long ldc, long nv,
           float alpha, bool acc) {
  const __mmask16 m0 = tail_mask(nv);
  const __mmask16 m1 = nv > 16 ? tail_mask(nv - 16) : static_cast<__mmask16>(0);
  __m512 c0[M], c1[M];
  _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) c0[m] = c1[m] = _mm512_setzero_ps();
  for (long k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * ldb);
    const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + k * ldb + 16);
    const float* ak = ap + k * MR;
    _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) {
      const __m512 av = _mm512_set1_ps(ak[m]);
      c0[m] = _mm512_fmadd_ps(av, b0, c0[m]);
      c1[m] = _mm512_fmadd_ps(av, b1, c1[m]);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha);
  _Pragma("GCC unroll 16") for (int m = 0; m < M; ++m) {
    float* cm = c + m * ldc;
    __m512 r0 = _mm512_mul_ps(al, c0[m]), r1 = _mm512_mul_ps(al, c1[m]);
    if (acc) {
      r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, cm));
      r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, cm + 16));
    }
    _mm512_mask_storeu_ps(cm, m0, r0);
    _mm512_mask_storeu_ps(cm + 16, m1, r1);
  }
}

using MicroFn = void (*)(long, const float*, const float*, long, float*, long, long, float, bool);
template <int... I>
constexpr auto micro_table(std::integer_sequence<int, I...>) {
  return std::array<MicroFn, MR + 1>{nullptr, micro<I + 1>...};
}
constexpr auto kMicro = micro_table(std::make_integer_sequence<int, MR>{});

// Goto-style loop: for each depth block and MR-row panel, pack A once ([k][MR], contiguous
// broadcasts) and sweep every NR-column strip of B; a KC x N block of B stays in L2.
void gemm(long M, long N, long K, const float* a, long a_rs, long a_cs, const float* b, long ldb,
          float* c, long ldc, float alpha, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (long m = 0; m < M; ++m)
        for (long n = 0; n < N; ++n) c[m * ldc + n] = 0.f;
    return;
  }
  alignas(64) float pack[KC * MR];
  for (long k0 = 0; k0 < K; k0 += KC) {
    const long kc = K - k0 < KC ? K - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (long m0 = 0; m0 < M; m0 += MR) {
      const long mm = M - m0 < MR ? M - m0 : MR;
      const float* am = a + m0 * a_rs + k0 * a_cs;
      if (a_cs == 1) {
        for (long m = 0; m < mm; ++m)
          for (long k = 0; k < kc; ++k) pack[k * MR + m] = am[m * a_rs + k];
      } else {
        for (long k = 0; k < kc; ++k)
          for (long m = 0; m < mm; ++m) pack[k * MR + m] = am[k * a_cs + m * a_rs];
      }
      for (long n0 = 0; n0 < N; n0 += NR) {
        const long nv = N - n0 < NR ? N - n0 : NR;
        kMicro[mm](kc, pack, b + k0 * ldb + n0, ldb, c + m0 * ldc + n0, ldc, nv, alpha, acc);
      }
    }
  }
}

// exp(x) = 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2 and a degree-6 polynomial for e^r
// (relative error ~1e-7). Inputs below -87 (including -inf, the mask value) give exactly 0.
inline __m512 exp16(__m512 x) {
  const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n));
}

// NaN-sticky max (contract in contrastive_loss.h): maxps(v, mx) returns mx when either is NaN,
// so a NaN mx stays; a NaN or -inf v (not greater than -inf) turns its lane NaN.
void col_max(const float* x, long nj, long n, long ldx, float* mx) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY), nan = _mm512_set1_ps(NAN);
  for (long j = 0; j < nj; ++j) {
    const float* xj = x + j * ldx;
    for (long i = 0; i < n; i += 16) {
      const __mmask16 mk = tail_mask(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(mk, xj + i);
      const __mmask16 bad = _mm512_mask_cmp_ps_mask(mk, v, ninf, _CMP_NGT_UQ);
      const __m512 m = _mm512_max_ps(v, _mm512_maskz_loadu_ps(mk, mx + i));
      _mm512_mask_storeu_ps(mx + i, mk, _mm512_mask_mov_ps(m, bad, nan));
    }
  }
}

void col_sumexp(const float* x, long nj, long n, long ldx, const float* mx, float* sum) {
  for (long j = 0; j < nj; ++j) {
    const float* xj = x + j * ldx;
    for (long i = 0; i < n; i += 16) {
      const __mmask16 mk = tail_mask(n - i);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, xj + i),
                                           _mm512_maskz_loadu_ps(mk, mx + i)));
      _mm512_mask_storeu_ps(sum + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, sum + i), e));
    }
  }
}

void grad_rows(float* x, long nj, long n, long ldx, const float* lse, const float* w,
               const float* jlse, const float* jw) {
  for (long j = 0; j < nj; ++j) {
    float* xj = x + j * ldx;
    const bool col = jw != nullptr && jw[j] != 0.f;
    const __m512 cl = _mm512_set1_ps(col ? jlse[j] : 0.f), cw = _mm512_set1_ps(col ? jw[j] : 0.f);
    for (long i = 0; i < n; i += 16) {
      const __mmask16 mk = tail_mask(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(mk, xj + i);
      __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, w + i),
                               exp16(_mm512_sub_ps(v, _mm512_maskz_loadu_ps(mk, lse + i))));
      if (col) g = _mm512_fmadd_ps(cw, exp16(_mm512_sub_ps(v, cl)), g);
      _mm512_mask_storeu_ps(xj + i, mk, g);
    }
  }
}

float row_max(const float* x, long n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (long i = 0; i < n; i += 16)
    m = _mm512_max_ps(m, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(m);
}

float row_sumexp(const float* x, long n, float mx) {
  __m512 s = _mm512_setzero_ps();
  const __m512 m = _mm512_set1_ps(mx);
  for (long i = 0; i < n; i += 16) {
    const __mmask16 mk = tail_mask(n - i);
    s = _mm512_add_ps(s, _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), m))));
  }
  return _mm512_reduce_add_ps(s);
}

}  // namespace

const Kernels& kernels_avx512() {
  static const Kernels k{"avx512", MR, gemm, col_max, col_sumexp, grad_rows, row_max, row_sumexp};
  return k;
}

}  // namespace loss
}  // namespace densescale
