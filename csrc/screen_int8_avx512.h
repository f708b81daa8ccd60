// The int8 screen engine on AVX-512 registers, written once over its dot-product step: VPDPBUSD
// (screen_avx512vnni.cpp) or, without VNNI, VPMADDUBSW + VPMADDWD + VPADDD on queries whose pairs
// stay within 128 steps (screen_avx512bw.cpp; screen.h, "AVX2"). Anonymous namespace as
// screen_kernel.h: each ISA file compiles its own copy with its own flags.
//
// Engine: a register tile of kQ queries x 32 corpus rows (2 x kQ zmm int32 accumulators). The copy
// holds, per 16-row group and 64-dim chunk, one 64-byte line per dim quad p with the bytes
// (4p .. 4p + 3) of each of the 16 rows, so one load gives the step its 16 rows x 4 unsigned
// bytes, and the query's 4 signed bytes are one 32-bit broadcast. The queries are interleaved per
// block of 32 (quad t of query i at t * 128 + 4 i), so the tile's broadcasts are constant offsets
// from one pointer (separate query pointers ran out of registers). At the end each lane holds
// sum (x~ + 128) q~ over the row, and subtracting the query's 128 sum q~ leaves q~.x~ exactly.
#pragma once

#include <immintrin.h>

#include "screen_epi_avx512.h"

namespace densescale {
namespace {

// Dot::step(acc, x, q): acc + the sums of the 4 products of unsigned x and signed q bytes per
// int32 lane, exactly.
template <class Dot>
struct EngineInt8Avx512 {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineInt8Avx512(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 64) {}

  static constexpr int kQ = 8;  // queries per register tile

  // kQ queries (from q, interleaved; offsets corr) x 32 corpus rows (groups b0, b1):
  // P[i * n + r].
  void tile(const int8_t* q, const int32_t* corr, const uint8_t* b0, const uint8_t* b1, int64_t n,
            float* P) const {
    __m512i acc0[kQ], acc1[kQ];
    for (int i = 0; i < kQ; ++i) acc0[i] = acc1[i] = _mm512_setzero_si512();
    for (int64_t c = 0; c < nkc; ++c) {
      const uint8_t* c0 = b0 + c * 1024;
      const uint8_t* c1 = b1 + c * 1024;
      const int8_t* qc = q + c * 16 * 128;
      for (int p = 0; p < 16; ++p) {
        const __m512i x0 = _mm512_loadu_si512(c0 + p * 64);
        const __m512i x1 = _mm512_loadu_si512(c1 + p * 64);
        for (int i = 0; i < kQ; ++i) {
          int32_t quad;
          std::memcpy(&quad, qc + p * 128 + 4 * i, 4);
          const __m512i qb = _mm512_set1_epi32(quad);
          acc0[i] = Dot::step(acc0[i], x0, qb);
          acc1[i] = Dot::step(acc1[i], x1, qb);
        }
      }
    }
    for (int i = 0; i < kQ; ++i) {
      const __m512i off = _mm512_set1_epi32(corr[i]);
      _mm512_storeu_ps(P + i * n, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[i], off)));
      _mm512_storeu_ps(P + i * n + 16, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[i], off)));
    }
  }

  // P (mq x n, row stride n) for queries m0.. and rows j0.. : 32 corpus rows at a time (24 KiB at
  // D = 768, reused from L1 by the query tiles), queries in tiles of kQ, as many as the mq queries
  // need. Tiles of 12 (24 accumulators) spilled on AVX-512BW, whose step needs two more
  // registers than VPDPBUSD, and ran 1.15x slower; on VNNI 8 and 12 ran alike.
  void panel(int64_t m0, int mq, int64_t j0, int64_t n, float* P) const {
    const int8_t* q = s.q8 + m0 * s.Dp;
    const int32_t* corr = s.qcorr + m0;
    for (int64_t jb = 0; jb < n; jb += 32) {
      const uint8_t* b0 = s.c8 + ((j0 + jb) >> 4) * nkc * 1024;
      const uint8_t* b1 = b0 + nkc * 1024;
      for (int i = 0; i < mq; i += kQ) tile(q + i * 4, corr + i, b0, b1, n, P + i * n + jb);
    }
  }
};

}  // namespace
}  // namespace densescale
