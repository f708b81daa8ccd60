// AVX2/FMA path of search (compiled with -mavx2 -mfma -mf16c; called only when the CPU has them).
// Register tile 3 queries x 4 corpus rows: 12 accumulators + 3 query vectors + 1 corpus vector
// fill the 16 ymm registers.
#include <immintrin.h>

#include "search_kernel.h"

namespace densescale {
namespace {

struct V256 {
  using reg = __m256;
  static constexpr int W = 8, MR = 3, NR = 4;
  static constexpr bool kOutlineTile = true;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load(const F16* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static reg load(const BF16* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace

void topk_avx2(TopkArgs& a) { topk_dispatch<V256>(a); }
void candidates_avx2(CandidateArgs& a) { candidates_dispatch<V256>(a); }
void pairs_avx2(PairArgs& a) { pairs_dispatch<V256>(a); }

}  // namespace densescale
