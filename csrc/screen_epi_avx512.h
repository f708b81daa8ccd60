// AVX-512 epilogue of the screen (screen_kernel.h's Epi): 16 rows per vector, the bounds of
// screen.h (S = P w, E = (A a + B b + d) * bound_scale), compress-stores the kept (U, L, id).
// Included only by files compiled with AVX-512 (screen_amx.cpp, screen_avx512bf16.cpp); anonymous
// namespace as screen_kernel.h.
#pragma once

#include <immintrin.h>

#include "screen_kernel.h"

namespace densescale {
namespace {

struct EpiAvx512 {
  static int64_t push(const float* P, const ScreenScan& s, int64_t j0, int nvalid, float A, float B,
                      float t, float* uo, float* lo, int32_t* io) {
    const __m512 vA = _mm512_set1_ps(A), vB = _mm512_set1_ps(B), vT = _mm512_set1_ps(t);
    const __m512 vs = _mm512_set1_ps(s.bound_scale);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t n = 0;
    for (int h = 0; h < nvalid; h += 16) {
      const int64_t j = j0 + h;
      const __mmask16 valid =
          nvalid - h >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (nvalid - h)) - 1);
      const __m512 S = _mm512_mul_ps(_mm512_loadu_ps(P + h), _mm512_loadu_ps(s.meta + j));
      const __m512 bd = _mm512_fmadd_ps(vB, _mm512_loadu_ps(s.meta + 2 * s.Np + j),
                                        _mm512_loadu_ps(s.meta + 3 * s.Np + j));
      const __m512 E =
          _mm512_mul_ps(_mm512_fmadd_ps(vA, _mm512_loadu_ps(s.meta + s.Np + j), bd), vs);
      const __m512 U = _mm512_add_ps(S, E);
      const __mmask16 keep = _mm512_mask_cmp_ps_mask(valid, U, vT, _CMP_GE_OQ);
      if (keep) {  // compress in registers, store whole vectors (the lists have 16 spare slots)
        _mm512_storeu_ps(uo + n, _mm512_maskz_compress_ps(keep, U));
        _mm512_storeu_ps(lo + n, _mm512_maskz_compress_ps(keep, _mm512_sub_ps(S, E)));
        const __m512i ids = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(j)), iota);
        _mm512_storeu_si512(io + n, _mm512_maskz_compress_epi32(keep, ids));
        n += __builtin_popcount(keep);
      }
    }
    return n;
  }

  // The list compaction on 16 lanes (the scalar one's results: the k-th largest value is one
  // value whatever the algorithm, and the kept rows keep their order). Selection is a
  // quickselect whose partitions are compress-stores, branch-free per element, which the
  // scalar nth_element's data-dependent branches are not; short ranges finish in nth_element.
  static int64_t select_scratch(int64_t n) { return 3 * (n + 16); }

  static __mmask16 lanes(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
  }

  static float kth_largest_above(const float* v, int64_t n, int64_t k, float t, float* w) {
    float* a = w;  // the range still holding the k-th largest, and two buffers to partition into
    float* hi = w + (n + 16);
    float* lo = w + 2 * (n + 16);
    const __m512 vt = _mm512_set1_ps(t);
    int64_t c = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 in = lanes(n - i);
      const __m512 x = _mm512_maskz_loadu_ps(in, v + i);
      const __mmask16 m = _mm512_mask_cmp_ps_mask(in, x, vt, _CMP_GE_OQ);
      _mm512_storeu_ps(a + c, _mm512_maskz_compress_ps(m, x));
      c += __builtin_popcount(m);
    }
    if (c < k) return t;
    for (int round = 0; round < 16 && c > 64; ++round) {
      // median of three as the pivot p; the range splits into > p, == p (dropped), < p
      float x0 = a[0], x1 = a[c / 2], x2 = a[c - 1];
      if (x0 > x1) std::swap(x0, x1);
      if (x1 > x2) std::swap(x1, x2);
      if (x0 > x1) std::swap(x0, x1);
      const __m512 vp = _mm512_set1_ps(x1);
      int64_t ng = 0, nl = 0;
      for (int64_t i = 0; i < c; i += 16) {
        const __mmask16 in = lanes(c - i);
        const __m512 x = _mm512_maskz_loadu_ps(in, a + i);
        const __mmask16 g = _mm512_mask_cmp_ps_mask(in, x, vp, _CMP_GT_OQ);
        const __mmask16 l = _mm512_mask_cmp_ps_mask(in, x, vp, _CMP_LT_OQ);
        _mm512_storeu_ps(hi + ng, _mm512_maskz_compress_ps(g, x));
        _mm512_storeu_ps(lo + nl, _mm512_maskz_compress_ps(l, x));
        ng += __builtin_popcount(g);
        nl += __builtin_popcount(l);
      }
      if (k <= ng) {
        std::swap(a, hi);
        c = ng;
      } else if (k <= c - nl) {
        return x1;
      } else {
        k -= c - nl;
        std::swap(a, lo);
        c = nl;
      }
    }
    std::nth_element(a, a + (k - 1), a + c, Descending());
    return a[k - 1];
  }

  // In place: the compressed vector is stored at w <= i, over lanes already loaded (the lists
  // have 16 spare slots past n).
  static int64_t keep_reachable(float* u, float* l, int32_t* id, int64_t n, float t) {
    const __m512 vt = _mm512_set1_ps(t);
    int64_t w = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 in = lanes(n - i);
      const __m512 U = _mm512_maskz_loadu_ps(in, u + i);
      const __m512 L = _mm512_maskz_loadu_ps(in, l + i);
      const __m512i I = _mm512_maskz_loadu_epi32(in, id + i);
      const __mmask16 m = _mm512_mask_cmp_ps_mask(in, U, vt, _CMP_GE_OQ);
      _mm512_storeu_ps(u + w, _mm512_maskz_compress_ps(m, U));
      _mm512_storeu_ps(l + w, _mm512_maskz_compress_ps(m, L));
      _mm512_storeu_si512(id + w, _mm512_maskz_compress_epi32(m, I));
      w += __builtin_popcount(m);
    }
    return w;
  }
};

}  // namespace
}  // namespace densescale
