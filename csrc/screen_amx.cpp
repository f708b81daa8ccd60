// AMX path of the screen (compiled with -mamx-tile -mamx-bf16 and AVX-512; called only when
// amx_usable()). Engine: 2 x 2 output tiles of 16 x 16 fp32 (32 queries x 32 corpus rows), per 32
// dims two query tiles (A, 16 x 32 bf16) and two corpus tiles (B, VNNI pairs) -> 4 TDPBF16PS.
// Epilogue: AVX-512, 16 rows per vector, compress-stores the kept (U, L, id).
#include <immintrin.h>

#include "screen_kernel.h"

namespace densescale {
namespace {

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

struct EngineAmx {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineAmx(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 32) {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
      cfg.colsb[t] = 64;
      cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);  // per thread: each unit runs on one thread
  }
  ~EngineAmx() { _tile_release(); }
  EngineAmx(const EngineAmx&) = delete;
  EngineAmx& operator=(const EngineAmx&) = delete;

  // P (32 x n, row stride n) for queries m0.. and rows j0.. . The depth is cut into chunks of
  // kKc x 32 dims so the two query tiles' chunk (16 KiB) stays in L1 while the corpus panel
  // streams from L2 (2 KiB of tile loads per 4 TDPBF16PS); the accumulators go through P between
  // chunks.
  void panel(int64_t m0, int64_t j0, int64_t n, float* P) const {
    constexpr int64_t kKc = 8;
    const uint16_t* q0 = s.qpack + m0 * s.Dp;
    const uint16_t* q1 = q0 + 16 * s.Dp;
    const int64_t qstride = s.Dp * 2, pstride = n * 4;
    for (int64_t c0 = 0; c0 < nkc; c0 += kKc) {
      const int64_t c1 = std::min(nkc, c0 + kKc);
      for (int64_t jb = 0; jb < n; jb += 32) {
        const uint16_t* b0 = s.cpack + ((j0 + jb) >> 4) * nkc * 512;
        const uint16_t* b1 = b0 + nkc * 512;
        float* p = P + jb;
        if (c0 == 0) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        } else {
          _tile_loadd(0, p, pstride);
          _tile_loadd(1, p + 16, pstride);
          _tile_loadd(2, p + 16 * n, pstride);
          _tile_loadd(3, p + 16 * n + 16, pstride);
        }
        for (int64_t c = c0; c < c1; ++c) {
          _tile_loadd(4, q0 + c * 32, qstride);
          _tile_loadd(5, q1 + c * 32, qstride);
          _tile_loadd(6, b0 + c * 512, 64);
          _tile_loadd(7, b1 + c * 512, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, p, pstride);
        _tile_stored(1, p + 16, pstride);
        _tile_stored(2, p + 16 * n, pstride);
        _tile_stored(3, p + 16 * n + 16, pstride);
      }
    }
  }
};

struct EpiAvx512 {
  static int64_t push(const float* P, const ScreenScan& s, int64_t j0, int nvalid, float A, float B,
                      float t, float* uo, float* lo, int32_t* io) {
    const __m512 vA = _mm512_set1_ps(A), vB = _mm512_set1_ps(B), vT = _mm512_set1_ps(t);
    const __m512 vs = _mm512_set1_ps(s.bound_scale);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t n = 0;
    for (int h = 0; h < 32 && h < nvalid; h += 16) {
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
      if (keep) {  // compress in registers, store whole vectors (the lists have 32 spare slots)
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

void screen_unit_amx(const ScreenScan& s, ScreenUnit& u) { screen_unit_impl<EngineAmx, EpiAvx512>(s, u); }
void screen_dump_amx(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineAmx>(s, M, S, E);
}

}  // namespace densescale
