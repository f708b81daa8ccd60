// The screening scan (see screen.h for the bound and why the result is exact), written once over
// an "engine" that computes a panel of bf16 dot products P (32 queries x up to 256 rows) and an
// epilogue that turns P into bounds and keeps candidates. Anonymous namespace: each ISA file gets
// its own copy compiled with its own flags (as search_kernel.h).
//
// Engine: constructor(const ScreenScan&), panel(query row m (multiple of 32), queries mq (1..32),
// corpus row j (multiple of 32), rows n (multiple of 32), float* P) with P[i * n + r] =
// q~_{m+i} . x~_{j+r} for i < mq (rows of P from mq on may hold anything: an engine may skip
// them, e.g. for a batch of 8 queries).
// Epi: push(P row (up to kPanelRows), ScreenScan, j0, nvalid, A, B, t, u_out, l_out, id_out) ->
// kept count; kth_largest_above, keep_reachable and select_scratch for the compaction
// (ScalarCompaction, or compress-store loops in screen_epi_avx512.h).
// Per query the scan keeps (U, L, id) of rows with U >= t. Whenever the list grew by max(k, 64)
// rows, or by its length after the last compaction if that is more, it is compacted
// (compact_list): t is first raised to the threshold another unit of the same query published,
// then becomes the k-th largest L in the list (a linear-time selection), the rows with U < t are
// dropped and t is published in turn; a list that stays longer than the unit's capacity sends
// the query to the exact kernel. Every t is the k-th largest L of some set of rows of the
// corpus, so it never exceeds the final threshold (screen.h, "Why the result is exact").
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "screen.h"

namespace densescale {
namespace {

// Packed corpus: group g of 16 rows, chunk c of 32 dims is one AMX B tile (16 x 64 bytes) in the
// VNNI layout: element (row g*16 + r, dim c*32 + 2*p + e) at ((g * nkc + c) * 16 + p) * 32 + 2r + e.
inline int64_t packed_index(int64_t row, int64_t d, int64_t nkc) {
  const int64_t g = row >> 4, r = row & 15, c = d >> 5, p = (d & 31) >> 1, e = d & 1;
  return ((g * nkc + c) * 16 + p) * 32 + 2 * r + e;
}

// int8 copy: group g of 16 rows, chunk c of 64 dims, in the layout VPDPBUSD (and an AMX-INT8 B
// tile) reads: element (row g*16 + r, dim c*64 + 4*p + e) at ((g*nkc + c) * 16 + p) * 64 + 4r + e.
inline int64_t packed_index8(int64_t row, int64_t d, int64_t nkc) {
  const int64_t g = row >> 4, r = row & 15, c = d >> 6, p = (d & 63) >> 2, e = d & 3;
  return ((g * nkc + c) * 16 + p) * 64 + 4 * r + e;
}

// int8 queries, interleaved per block of 32 queries: quad t (dims 4t .. 4t + 3) of query
// m = 32 b + i at b * 32 * Dp + t * 128 + 4 i.
inline int64_t query_index8(int64_t m, int64_t d, int64_t Dp) {
  return (m >> 5) * 32 * Dp + (d >> 2) * 128 + (m & 31) * 4 + (d & 3);
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t w = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

// A heap buffer of this file's own type: the out-of-line members of a standard container
// instantiated in an AVX-512 / AMX file could be the copy the linker keeps for generic code.
template <class T>
struct Buf {
  T* p;
  Buf(int64_t n, T v) : p(new T[n > 0 ? n : 1]) {
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  }
  ~Buf() { delete[] p; }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* data() { return p; }
  T& operator[](int64_t i) { return p[i]; }
};

// Raise a threshold shared by the units of one query to t (never lowers it).
inline void publish(std::atomic<float>& shared, float t) {
  float cur = shared.load(std::memory_order_relaxed);
  while (t > cur && !shared.compare_exchange_weak(cur, t, std::memory_order_relaxed)) {
  }
}

// The comparator is a type of this file's anonymous namespace, so each ISA file instantiates its
// own nth_element.
struct Descending {
  bool operator()(float a, float b) const { return a > b; }
};

// The list compaction of the scalar and AVX2 epilogues (an Epi provides these three; the
// AVX-512 one in screen_epi_avx512.h).
struct ScalarCompaction {
  static int64_t select_scratch(int64_t n) { return n; }

  // The k-th largest of v[0..n) if at least k of them are >= t, else t (the k-th largest is then
  // below t, which stays the better threshold): only the values >= t are selected, in the
  // scratch w (select_scratch(n) floats).
  static float kth_largest_above(const float* v, int64_t n, int64_t k, float t, float* w) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; ++i) {
      w[c] = v[i];
      c += v[i] >= t;
    }
    if (c < k) return t;
    std::nth_element(w, w + (k - 1), w + c, Descending());
    return w[k - 1];
  }

  // Keep the rows with U >= t, in order; returns the new count.
  static int64_t keep_reachable(float* u, float* l, int32_t* id, int64_t n, float t) {
    int64_t w = 0;
    for (int64_t i = 0; i < n; ++i) {
      u[w] = u[i];
      l[w] = l[i];
      id[w] = id[i];
      w += u[i] >= t;
    }
    return w;
  }
};

// Scalar epilogue (any CPU): the same formulas as the vector one.
struct EpiScalar : ScalarCompaction {
  static int64_t push(const float* P, const ScreenScan& s, int64_t j0, int nvalid, float A, float B,
                      float t, float* uo, float* lo, int32_t* io) {
    const float* w = s.meta;
    const float* a = s.meta + s.Np;
    const float* b = s.meta + 2 * s.Np;
    const float* d = s.meta + 3 * s.Np;
    int64_t n = 0;
    for (int r = 0; r < nvalid; ++r) {
      const int64_t j = j0 + r;
      const float S = P[r] * w[j];
      const float E = std::fma(A, a[j], std::fma(B, b[j], d[j])) * s.bound_scale;
      const float U = S + E;
      if (U >= t) {
        uo[n] = U;
        lo[n] = S - E;
        io[n++] = static_cast<int32_t>(j);
      }
    }
    return n;
  }
};

// One list (U, L, id; n rows, 16 spare slots) compacted against threshold t: t becomes the k-th
// largest L at or above it (if there are k such), the rows with U < t are dropped in place, the
// kept count is returned. scratch: Epi::select_scratch(n) floats.
template <class Epi>
int64_t compact_list(float* u, float* l, int32_t* id, int64_t n, int64_t k, float& t,
                     float* scratch) {
  t = Epi::kth_largest_above(l, n, k, t, scratch);
  return Epi::keep_reachable(u, l, id, n, t);
}

// Rows per panel: the engine computes P for 32 queries x kPanelRows rows at once (the corpus
// panel, 384 KiB of bf16 at D = 768, stays in L2 while the query block passes over it).
constexpr int64_t kPanelRows = 256;

template <class Engine, class Epi>
void screen_unit_impl(const ScreenScan& s, ScreenUnit& u) {
  Engine eng(s);
  const int64_t k = s.k, cap = u.cap;
  float* thr = u.thr;
  Buf<float> panel(32 * kPanelRows, 0.f);
  float* P = panel.data();
  Buf<float> scratch(Epi::select_scratch(cap), 0.f);
  // A list is compacted whenever it grew by `grow` rows or by as many rows as it kept at the last
  // compaction, whichever is more: each compaction reads the whole list, so this keeps the cost
  // per pushed row constant when the bound keeps many more rows than k (int8).
  const int64_t grow = std::max<int64_t>(k, 64);
  Buf<int64_t> compact_after(u.mq, grow);
  // Compact query m's list of n rows: the new threshold, the rows that can still reach it.
  auto compact = [&](int64_t m, int64_t n) {
    float t = std::max(thr[m], u.shared_thr[m].load(std::memory_order_relaxed));
    n = compact_list<Epi>(u.u + m * cap, u.l + m * cap, u.id + m * cap, n, k, t, scratch.data());
    thr[m] = t;
    publish(u.shared_thr[m], t);
    return n;
  };
  for (int64_t i = 0; i < u.mq; ++i) {
    u.count[i] = 0;
    thr[i] = u.shared_thr[i].load(std::memory_order_relaxed);
  }
  const int64_t j_end = std::min(u.j1, (s.N + 31) / 32 * 32);
  for (int64_t jp = u.j0; jp < j_end; jp += kPanelRows) {
    const int64_t nrows = std::min(kPanelRows, j_end - jp);  // a multiple of 32
    for (int64_t i0 = 0; i0 < u.mq; i0 += 32) {
      const int mr = static_cast<int>(std::min<int64_t>(32, u.mq - i0));
      int need = 0;  // queries of this block still screened, up to the last one (padding skips)
      for (int i = 0; i < mr; ++i)
        if (!u.skip[i0 + i]) need = i + 1;
      if (need == 0) continue;
      eng.panel(u.m0 + i0, need, jp, nrows, P);
      // The whole panel row of each query in one push (a push writes whole 16-lane vectors:
      // the lists keep kPanelRows + 16 spare slots).
      const int nvalid = static_cast<int>(std::min<int64_t>(nrows, s.N - jp));
      for (int i = 0; i < mr; ++i) {
        const int64_t m = i0 + i;
        if (u.skip[m]) continue;
        int64_t n = u.count[m];
        if (n > compact_after[m] || n + nvalid + 16 > cap) {
          n = compact(m, n);
          if (n + nvalid + 16 > cap) {  // the bound keeps too many rows: exact kernel for it
            u.skip[m] = 1;
            u.count[m] = 0;
            continue;
          }
          compact_after[m] = n + std::max(grow, n);
        }
        u.count[m] = n + Epi::push(P + i * nrows, s, jp, nvalid, s.qA[u.m0 + m], s.qB[u.m0 + m],
                                   thr[m], u.u + m * cap + n, u.l + m * cap + n,
                                   u.id + m * cap + n);
        u.slot_used[m] = std::max(u.slot_used[m], u.count[m] + 16);
      }
    }
  }
  for (int64_t m = 0; m < u.mq; ++m)
    if (!u.skip[m]) u.count[m] = compact(m, u.count[m]);
}

// S and E of every pair, in query units (for the tests of the bound).
template <class Engine>
void screen_dump_impl(const ScreenScan& s, int64_t M, float* S, float* E) {
  Engine eng(s);
  Buf<float> panel(32 * 32, 0.f);
  float* P = panel.data();
  const float* w = s.meta;
  const float* a = s.meta + s.Np;
  const float* b = s.meta + 2 * s.Np;
  const float* d = s.meta + 3 * s.Np;
  for (int64_t j0 = 0; j0 < s.N; j0 += 32) {
    const int64_t nv = std::min<int64_t>(32, s.N - j0);
    for (int64_t m0 = 0; m0 < M; m0 += 32) {
      eng.panel(m0, static_cast<int>(std::min<int64_t>(32, M - m0)), j0, 32, P);
      for (int64_t i = 0; i < std::min<int64_t>(32, M - m0); ++i)
        for (int64_t r = 0; r < nv; ++r) {
          const int64_t j = j0 + r, m = m0 + i;
          S[m * s.N + j] = P[i * 32 + r] * w[j];
          E[m * s.N + j] = std::fma(s.qA[m], a[j], std::fma(s.qB[m], b[j], d[j])) * s.bound_scale;
        }
    }
  }
}

}  // namespace
}  // namespace densescale
