// AVX2 path of the screen, for CPUs without AVX-512 (AMD Zen 2/3, Intel Haswell to Comet Lake)
// and the default there; compiled with -mavx2 -mfma, called only when the active ISA is AVX2 or
// better. It reads the int8 copy (screen.h, "The int8 format") with queries whose pairs of dims are
// scaled to |q~_2i| + |q~_2i+1| <= 128 ("AVX2" there), which is what makes VPMADDUBSW exact.
//
// Why: AVX2 has no int8 dot product into int32. VPMADDUBSW multiplies unsigned by signed bytes and
// adds adjacent pairs into int16 with saturation; VPMADDWD by ones then adds adjacent int16 pairs
// into int32, and VPADDD accumulates: with (x~ + 128) <= 255 every pair sum is at most 255 * 128 =
// 32,640 < 2^15, so nothing saturates and the three instructions compute what one VPDPBUSD does,
// exactly. Measured on this project's Xeon with register-only loops on one core: 103 multiplies
// per ns against 57 for a 256-bit fp32 FMA (1.8x), so the screen beats fp32 BLAS where AVX2 is the
// widest ISA. (On AVX-512 CPUs without VNNI the 512-bit FMA, 103 per ns, matches it, so there this
// engine is not the default: default_engine in screen.cpp.) The alternatives measured: 7-bit
// queries (|q~| <= 63) kept 4,550 rows per query against 2,370 (200k x 768 Gaussian, k = 100) and
// cost 0.45 s more in lists and rescoring; full int8 queries through VPSIGNB (|x~| times q~
// sign(x~)) cost a fourth instruction per step (63 multiplies per ns).
//
// Engine: a register tile of kQ <= 4 queries x 16 corpus rows (2 kQ ymm int32 accumulators, plus
// two corpus vectors, the query broadcast, a product and the ones). Each 64-byte line of the copy
// (one dim quad of a 16-row group) is two ymm loads; the query's 4 bytes are one 32-bit broadcast
// from the interleaved block (screen_kernel.h, query_index8).
#include <immintrin.h>

#include "screen_kernel.h"

namespace densescale {
namespace {

struct EngineAvx2 {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineAvx2(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 64) {}

  // kQ queries (from q, interleaved; offsets corr) x the 16 rows of group g: P[i * n + r].
  template <int kQ>
  void tile(const int8_t* q, const int32_t* corr, const uint8_t* g, int64_t n, float* P) const {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc0[kQ], acc1[kQ];
#pragma GCC unroll 8
    for (int i = 0; i < kQ; ++i) acc0[i] = acc1[i] = _mm256_setzero_si256();
    for (int64_t c = 0; c < nkc; ++c) {
      const uint8_t* gc = g + c * 1024;
      const int8_t* qc = q + c * 16 * 128;
      for (int p = 0; p < 16; ++p) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gc + p * 64));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gc + p * 64 + 32));
#pragma GCC unroll 8
        for (int i = 0; i < kQ; ++i) {
          int32_t quad;
          std::memcpy(&quad, qc + p * 128 + 4 * i, 4);
          const __m256i qb = _mm256_set1_epi32(quad);
          acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(_mm256_maddubs_epi16(x0, qb), ones));
          acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(_mm256_maddubs_epi16(x1, qb), ones));
        }
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kQ; ++i) {
      const __m256i off = _mm256_set1_epi32(corr[i]);
      _mm256_storeu_ps(P + i * n, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc0[i], off)));
      _mm256_storeu_ps(P + i * n + 8, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc1[i], off)));
    }
  }

  // P (mq x n, row stride n) for queries m0.. and rows j0..: one 16-row group at a time (12 KiB
  // at D = 768, reused from L1 by the query tiles), queries in tiles of 4 (94 multiplies per ns
  // on this project's Xeon, one core: 92% of the loop's peak; tiles of 5 spill, 84 per ns) and
  // the rest.
  void panel(int64_t m0, int mq, int64_t j0, int64_t n, float* P) const {
    const int8_t* q = s.q8 + m0 * s.Dp;
    const int32_t* corr = s.qcorr + m0;
    for (int64_t jb = 0; jb < n; jb += 16) {
      const uint8_t* g = s.c8 + ((j0 + jb) >> 4) * nkc * 1024;
      int i = 0;
      for (; i + 4 <= mq; i += 4) tile<4>(q + 4 * i, corr + i, g, n, P + i * n + jb);
      switch (mq - i) {
        case 3: tile<3>(q + 4 * i, corr + i, g, n, P + i * n + jb); break;
        case 2: tile<2>(q + 4 * i, corr + i, g, n, P + i * n + jb); break;
        case 1: tile<1>(q + 4 * i, corr + i, g, n, P + i * n + jb); break;
        default: break;
      }
    }
  }
};

// The epilogue with 8 rows per vector: the bounds as EpiScalar (the same fused operations in the
// same order), one compare per vector; the rare kept rows are stored one by one (AVX2 has no
// compress store).
struct EpiAvx2 : ScalarCompaction {
  static int64_t push(const float* P, const ScreenScan& s, int64_t j0, int nvalid, float A, float B,
                      float t, float* uo, float* lo, int32_t* io) {
    const __m256 vA = _mm256_set1_ps(A), vB = _mm256_set1_ps(B), vT = _mm256_set1_ps(t);
    const __m256 vs = _mm256_set1_ps(s.bound_scale);
    int64_t n = 0;
    for (int h = 0; h < nvalid; h += 8) {
      const int64_t j = j0 + h;
      const __m256 S = _mm256_mul_ps(_mm256_loadu_ps(P + h), _mm256_loadu_ps(s.meta + j));
      const __m256 bd = _mm256_fmadd_ps(vB, _mm256_loadu_ps(s.meta + 2 * s.Np + j),
                                        _mm256_loadu_ps(s.meta + 3 * s.Np + j));
      const __m256 E =
          _mm256_mul_ps(_mm256_fmadd_ps(vA, _mm256_loadu_ps(s.meta + s.Np + j), bd), vs);
      const __m256 U = _mm256_add_ps(S, E);
      unsigned keep = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(U, vT, _CMP_GE_OQ)));
      if (nvalid - h < 8) keep &= (1u << (nvalid - h)) - 1;
      if (!keep) continue;
      alignas(32) float u8[8], l8[8];
      _mm256_store_ps(u8, U);
      _mm256_store_ps(l8, _mm256_sub_ps(S, E));
      for (; keep; keep &= keep - 1) {
        const int r = __builtin_ctz(keep);
        uo[n] = u8[r];
        lo[n] = l8[r];
        io[n++] = static_cast<int32_t>(j + r);
      }
    }
    return n;
  }
};

}  // namespace

void screen_unit_avx2(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineAvx2, EpiAvx2>(s, u);
}
void screen_dump_avx2(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineAvx2>(s, M, S, E);
}

}  // namespace densescale
