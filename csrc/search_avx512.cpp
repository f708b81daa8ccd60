// AVX-512 path of search (compiled with -mavx512f/bw/vl/dq -mfma -mf16c; called only when the CPU
// has them). Register tile 4 queries x 6 corpus rows: 24 accumulators + 4 query vectors + 1 corpus
// vector of the 32 zmm registers; 10 loads per 24 FMAs keeps the FMA pipes the bottleneck.
#include <immintrin.h>

#include "search_kernel.h"

namespace densescale {
namespace {

struct V512 {
  using reg = __m512;
  static constexpr int W = 16, MR = 4, NR = 6;
  static constexpr bool kOutlineTile = false;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load(const F16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static reg load(const BF16* p) {  // bf16 is the top half of an fp32: widen and shift
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(reg a) { return _mm512_reduce_add_ps(a); }
};

}  // namespace

void topk_avx512(TopkArgs& a) { topk_dispatch<V512>(a); }
void candidates_avx512(CandidateArgs& a) { candidates_dispatch<V512>(a); }
void pairs_avx512(PairArgs& a) { pairs_dispatch<V512>(a); }

}  // namespace densescale
