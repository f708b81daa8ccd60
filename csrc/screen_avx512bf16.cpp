// AVX512-BF16 path of the screen (compiled with -mavx512bf16 and AVX-512, called only when
// avx512bf16_usable()). Same copy, same bound, same epilogue (screen_epi_avx512.h) as the AMX
// engine; only the panel of bf16 dot products differs. Every CPU with AVX512-BF16 also has
// AVX512-VNNI, whose int8 engine (screen_avx512vnni.cpp) is the default without AMX; this one is
// pinned with DENSESCALE_SCREEN=avx512bf16, for data where int8's ~4x wider bound keeps too
// many rows (its bound is the AMX engine's).
//
// Engine: a register tile of kQ queries x 32 corpus rows (2 x kQ zmm accumulators of 16 fp32).
// The packed corpus already holds, per 16-row group and 32-dim chunk, one 64-byte line per dim
// pair p with the pair (2p, 2p + 1) of each of the 16 rows (the AMX B-tile "VNNI" layout of
// screen_kernel.h): one load gives VDPBF16PS its 16 rows x 1 pair, and the query's pair is one
// 32-bit broadcast. So the (query, row) score lives in one fp32 lane from start to end.
//
// Accumulation order, for the bound of screen.h step (2): lane (i, r) starts at +0 and, for
// p = 0 .. Dp/2 - 1 in increasing order, VDPBF16PS adds the two products q~_{2p+1} x~_{2p+1} and
// q~_{2p} x~_{2p} (Intel SDM vol. 2, VDPBF16PS: each bf16 x bf16 product is exact in fp32 (8 + 8
// significand bits), each addition rounds to nearest even, inputs and outputs are flushed to zero
// (DAZ / FTZ, MXCSR not consulted)). That is recursive summation of the D real products (padding
// adds exact zeros) with at most one rounding per addition, so
//     |P - q~.x~| <= gamma_{D-1} sum|q~_i x~_i| + 2D 2^-126,
// inside screen.h's gamma_2D nu_q nu_j + 2D 2^-126: the factor 2 of slack also covers an
// implementation that adds the pair's two products with one rounding, or with two roundings in
// either order (AMD documents the instruction by Intel's pseudo-code; any of these orders stays
// within one rounding per added product), and the 2D 2^-126 term covers every product and every
// partial sum flushed to zero (at most D of each, each off by less than 2^-126).
//
// Speed: on this project's Xeon VDPBF16PS issues once every 2 cycles (32 products) against two
// fp32 FMAs (16 each) or two VPDPBUSD (64 each) per cycle, measured with a register-only loop, so
// there this engine is slower than the exact kernel; on a CPU where VDPBF16PS issues at the FMA
// rate it does twice the fp32 products (not measured: no such CPU here).
#include <immintrin.h>

#include "screen_epi_avx512.h"

namespace densescale {
namespace {

struct EngineBf16 {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineBf16(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 32) {}

  // kQ queries (rows of qpack from q) x 32 corpus rows (groups b0, b1): P[i * n + r].
  template <int kQ>
  void tile(const uint16_t* q, const uint16_t* b0, const uint16_t* b1, int64_t n, float* P) const {
    __m512 acc0[kQ], acc1[kQ];
    for (int i = 0; i < kQ; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
    const int64_t Dp = s.Dp;
    for (int64_t c = 0; c < nkc; ++c) {
      const uint16_t* c0 = b0 + c * 512;
      const uint16_t* c1 = b1 + c * 512;
      const uint16_t* qc = q + c * 32;
      for (int p = 0; p < 16; ++p) {
        const __m512bh x0 = (__m512bh)_mm512_loadu_si512(c0 + p * 32);
        const __m512bh x1 = (__m512bh)_mm512_loadu_si512(c1 + p * 32);
        for (int i = 0; i < kQ; ++i) {
          int32_t pair;
          std::memcpy(&pair, qc + i * Dp + 2 * p, 4);
          const __m512bh qb = (__m512bh)_mm512_set1_epi32(pair);
          acc0[i] = _mm512_dpbf16_ps(acc0[i], qb, x0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], qb, x1);
        }
      }
    }
    for (int i = 0; i < kQ; ++i) {
      _mm512_storeu_ps(P + i * n, acc0[i]);
      _mm512_storeu_ps(P + i * n + 16, acc1[i]);
    }
  }

  // P (mq x n, row stride n) for queries m0.. and rows j0.. : 32 corpus rows at a time (48 KiB at
  // D = 768, reused from L1 / L2 by the query tiles), queries in tiles of 12, 12 and 8, as many
  // as the mq queries need (one tile of 8 for a small batch: no work on padding queries).
  void panel(int64_t m0, int mq, int64_t j0, int64_t n, float* P) const {
    const uint16_t* q = s.qpack + m0 * s.Dp;
    for (int64_t jb = 0; jb < n; jb += 32) {
      const uint16_t* b0 = s.cpack + ((j0 + jb) >> 4) * nkc * 512;
      const uint16_t* b1 = b0 + nkc * 512;
      if (mq <= 8) {
        tile<8>(q, b0, b1, n, P + jb);
        continue;
      }
      tile<12>(q, b0, b1, n, P + jb);
      if (mq > 12) tile<12>(q + 12 * s.Dp, b0, b1, n, P + 12 * n + jb);
      if (mq > 24) tile<8>(q + 24 * s.Dp, b0, b1, n, P + 24 * n + jb);
    }
  }
};

}  // namespace

void screen_unit_avx512bf16(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineBf16, EpiAvx512>(s, u);
}
void screen_dump_avx512bf16(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineBf16>(s, M, S, E);
}

}  // namespace densescale
