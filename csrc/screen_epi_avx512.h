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
};

}  // namespace
}  // namespace densescale
