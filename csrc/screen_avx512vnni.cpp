// AVX512-VNNI path of the screen, for CPUs without AMX (AMD Zen 4/5, Intel Cascade Lake / Ice
// Lake) and the default there; compiled with -mavx512vnni and AVX-512, called only when
// avx512vnni_usable(). It reads the int8 copy (screen.h, "The int8 format"), whose bound the
// epilogue (screen_epi_avx512.h) evaluates with the same formulas as for bf16.
//
// Why int8 when the bound is ~4x wider than bf16's: VPDPBUSD does 64 multiplies per instruction
// (16 lanes x 4 byte pairs) at the rate of an fp32 FMA's 16 (measured on this project's Xeon:
// both 2 per cycle, while VDPBF16PS, 32 multiplies, issues once every 2 cycles), and its integer
// sums are exact, so step (2) of the bound has no error term at all. The wider bound costs the
// rescoring of more rows (about 1,450 per query at k = 100 on Gaussian rows, 0.7% of a 200k
// corpus), which is small beside the 4x on the full scan.
//
// Engine: screen_int8_avx512.h with VPDPBUSD as its step.
#include <immintrin.h>

#include "screen_int8_avx512.h"

namespace densescale {
namespace {

struct DotVnni {
  static __m512i step(__m512i acc, __m512i x, __m512i q) { return _mm512_dpbusd_epi32(acc, x, q); }
};

}  // namespace

void screen_unit_avx512vnni(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineInt8Avx512<DotVnni>, EpiAvx512>(s, u);
}
void screen_dump_avx512vnni(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineInt8Avx512<DotVnni>>(s, M, S, E);
}

}  // namespace densescale
