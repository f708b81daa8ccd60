// AVX-512 path of the int8 screen for CPUs without VNNI (Intel Skylake-SP / Skylake-X), and the
// default there; compiled with AVX-512 F/BW/VL/DQ, called only when the active ISA is AVX-512. The
// AVX2 engine's step (screen_avx2.cpp: VPMADDUBSW + VPMADDWD by ones + VPADDD, exact because its
// queries keep every pair of dims within 128 steps: screen.h, "AVX2") on 512-bit registers, in
// the VNNI engine's tile (screen_int8_avx512.h). Measured on this project's Xeon with
// register-only loops on one core: 138 multiplies per ns against 103 for a 512-bit fp32 FMA (1.34x:
// the three instructions share two ports; VPDPBUSD: 467). At 1,000 x 200,000 x 768, k = 100, side
// by side: 1.48-1.59 s against the exact AVX-512 kernel's 1.88-2.16 s and faiss's 1.43-1.46 s.
#include <immintrin.h>

#include "screen_int8_avx512.h"

namespace densescale {
namespace {

struct DotBw {
  static __m512i step(__m512i acc, __m512i x, __m512i q) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(x, q), _mm512_set1_epi16(1)));
  }
};

}  // namespace

void screen_unit_avx512bw(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineInt8Avx512<DotBw>, EpiAvx512>(s, u);
}
int64_t screen_compact_avx512(float* u, float* l, int32_t* id, int64_t n, int64_t k, float& t) {
  Buf<float> scratch(EpiAvx512::select_scratch(n), 0.f);
  return compact_list<EpiAvx512>(u, l, id, n, k, t, scratch.data());
}
void screen_dump_avx512bw(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineInt8Avx512<DotBw>>(s, M, S, E);
}

}  // namespace densescale
