// AMX path of the screen (compiled with -mamx-tile -mamx-bf16 and AVX-512; called only when
// amx_usable()). Engine: 2 x 2 output tiles of 16 x 16 fp32 (32 queries x 32 corpus rows), per 32
// dims two query tiles (A, 16 x 32 bf16) and two corpus tiles (B, VNNI pairs) -> 4 TDPBF16PS.
// Epilogue: AVX-512 (screen_epi_avx512.h).
#include <immintrin.h>

#include "screen_epi_avx512.h"

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
  void panel(int64_t m0, int /*mq: all 32 rows are computed*/, int64_t j0, int64_t n,
             float* P) const {
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

}  // namespace

void screen_unit_amx(const ScreenScan& s, ScreenUnit& u) { screen_unit_impl<EngineAmx, EpiAvx512>(s, u); }
void screen_dump_amx(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineAmx>(s, M, S, E);
}

}  // namespace densescale
