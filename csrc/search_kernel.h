// The search algorithms, written once over a SIMD "vector traits" type V and instantiated by each
// ISA file (generic in search.cpp, search_avx2.cpp, search_avx512.cpp). Everything here sits in an
// anonymous namespace, so every translation unit gets its own copy compiled with its own flags and
// the linker never mixes an AVX-512 instance into generic code.
//
// V provides: `reg`, `W` (lanes), `MR` x `NR` (register tile: MR queries x NR corpus rows),
// `kOutlineTile` (true: the tile is a function of its own, never inlined: see micro_tile_outlined),
// zero(), load(const float*), load(const F16*), load(const BF16*) (both widen to fp32 in register),
// store(float*, reg), fma(a, b, c) = a * b + c, hsum(reg) -> float.
//
// Top-k (per unit = a block of <= MB queries x a contiguous corpus range):
//   for each corpus block of NB rows:
//     tile[MB x NB] = Q_block . C_block^T with the MR x NR micro-kernel (the NR corpus rows stay in
//                     L1 while the query block streams from L2; each corpus row is read from
//                     memory once per query block);
//     per query: candidates with score > threshold (the current k-th best) go to a buffer of
//                capacity k + slack; a full buffer is cut back to its k best with nth_element,
//                which raises the threshold; a non-finite score is recorded (see below).
//   fp16 / bf16 corpus with a large query block: the NB rows are widened to fp32 once per block
//   (vector load + convert in registers, stored to an L1/L2-resident scratch of NB x D floats)
//   and the fp32 micro-kernel runs on that, so each element is converted once per query block
//   rather than once per MR-query register tile (the convert shares the FMA ports; widening per
//   tile made fp16 ~1.5x slower than fp32 at M = 1000). Small query blocks (memory-bound) widen
//   directly in the micro-kernel's loads.
// Non-finite scores: a NaN/Inf element in a query or corpus row makes every score of that row
// NaN or +-Inf (NaN propagates, Inf * 0 = NaN, Inf - Inf = NaN), so checking the scores, which
// sit in L1 anyway, detects bad inputs without a second pass over the corpus. Each unit records
// the smallest query and corpus row with a non-finite score; the launcher reports the row (and
// tells an overflow of finite inputs apart) on that error path only.
//   Units split the queries into blocks and, when there are few query blocks, the corpus into
//   shards (so M = 1 still uses every thread); per-unit top-k lists are merged at the end.
// Corpus ids within a unit grow monotonically, so "score > threshold" is the exact tie rule
// (an equal score arriving later has a larger id and loses).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "search.h"

#ifdef DENSESCALE_OPENMP
#include <omp.h>
#endif

namespace densescale {
namespace {

struct F16 {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(BF16 x) {
  uint32_t b = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline float to_float(F16 x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t b;
  if (exp == 0) {
    if (mant == 0) {
      b = sign;
    } else {  // subnormal half: mant * 2^-24
      const float f = std::ldexp(static_cast<float>(mant), -24);
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    b = sign | 0x7f800000u | (mant << 13);
  } else {
    b = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// ---- micro-kernel: out[i * ldo + j] = dot(q_i, c_j) for an MRr x NRr tile ----

template <class V, class T, int MRr, int NRr>
inline void micro_tile(const float* q, int64_t qs, const T* c, int64_t cs, int64_t D, float* out,
                       int64_t ldo) {
  typename V::reg acc[MRr][NRr];
  for (int i = 0; i < MRr; ++i)
    for (int j = 0; j < NRr; ++j) acc[i][j] = V::zero();
  int64_t d = 0;
  for (; d + V::W <= D; d += V::W) {
    typename V::reg qv[MRr];
    for (int i = 0; i < MRr; ++i) qv[i] = V::load(q + i * qs + d);
    for (int j = 0; j < NRr; ++j) {
      const typename V::reg cv = V::load(c + j * cs + d);
      for (int i = 0; i < MRr; ++i) acc[i][j] = V::fma(qv[i], cv, acc[i][j]);
    }
  }
  for (int i = 0; i < MRr; ++i)
    for (int j = 0; j < NRr; ++j) {
      float s = V::hsum(acc[i][j]);
      for (int64_t e = d; e < D; ++e) s += q[i * qs + e] * to_float(c[j * cs + e]);
      out[i * ldo + j] = s;
    }
}

// The same as a function of its own, for V::kOutlineTile: the AVX2 tile uses all 16 ymm registers,
// and inlined into run_unit's fp32 path GCC spilled it (the exact AVX2 search at 1,000 x 200,000
// x 768 took 5.0-5.4 s; outlined 2.8-3.0 s, the arithmetic unchanged). The call costs nothing
// beside a tile's D / W steps.
template <class V, class T, int MRr, int NRr>
__attribute__((noinline)) void micro_tile_outlined(const float* q, int64_t qs, const T* c,
                                                   int64_t cs, int64_t D, float* out, int64_t ldo) {
  micro_tile<V, T, MRr, NRr>(q, qs, c, cs, D, out, ldo);
}

template <class V, class T, int MRr, int NRr>
inline void micro_tile_call(const float* q, int64_t qs, const T* c, int64_t cs, int64_t D,
                            float* out, int64_t ldo) {
  if constexpr (V::kOutlineTile)
    micro_tile_outlined<V, T, MRr, NRr>(q, qs, c, cs, D, out, ldo);
  else
    micro_tile<V, T, MRr, NRr>(q, qs, c, cs, D, out, ldo);
}

template <class V, class T, int MRr>
inline void micro_cols(int nr, const float* q, int64_t qs, const T* c, int64_t cs, int64_t D,
                       float* out, int64_t ldo) {
  switch (nr) {
    case 1: micro_tile_call<V, T, MRr, 1>(q, qs, c, cs, D, out, ldo); break;
    case 2: micro_tile_call<V, T, MRr, 2>(q, qs, c, cs, D, out, ldo); break;
    case 3: micro_tile_call<V, T, MRr, 3>(q, qs, c, cs, D, out, ldo); break;
    case 4: micro_tile_call<V, T, MRr, 4>(q, qs, c, cs, D, out, ldo); break;
    case 5: if constexpr (V::NR >= 5) micro_tile_call<V, T, MRr, 5>(q, qs, c, cs, D, out, ldo); break;
    case 6: if constexpr (V::NR >= 6) micro_tile_call<V, T, MRr, 6>(q, qs, c, cs, D, out, ldo); break;
    default: break;
  }
}

template <class V, class T>
inline void micro_any(int mr, int nr, const float* q, int64_t qs, const T* c, int64_t cs, int64_t D,
                      float* out, int64_t ldo) {
  switch (mr) {
    case 1: micro_cols<V, T, 1>(nr, q, qs, c, cs, D, out, ldo); break;
    case 2: micro_cols<V, T, 2>(nr, q, qs, c, cs, D, out, ldo); break;
    case 3: micro_cols<V, T, 3>(nr, q, qs, c, cs, D, out, ldo); break;
    case 4: if constexpr (V::MR >= 4) micro_cols<V, T, 4>(nr, q, qs, c, cs, D, out, ldo); break;
    default: break;
  }
}

// ---- selection ----

struct Cand {
  float s;
  int64_t id;
};

// Result order: higher score first, equal scores by smaller id.
inline bool better(const Cand& a, const Cand& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); }

// Keep the k best of buf[0, count) at the front; returns the new count.
inline int64_t cut_to_k(Cand* buf, int64_t count, int64_t k) {
  if (count <= k) return count;
  std::nth_element(buf, buf + (k - 1), buf + count, better);
  return k;
}

constexpr int64_t kBlockRows = 48;  // NB: corpus rows per tile (a multiple of every NR)
// Query blocks with more rows than this widen fp16 / bf16 corpus blocks once into a scratch.
constexpr int64_t kWidenMinQueries = 16;

// True when every x[0..n) is finite (exponent bits not all ones); an integer OR the compiler
// vectorises, so it costs a fraction of one FMA per score.
inline bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    uint32_t b;
    std::memcpy(&b, x + j, 4);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

inline bool is_finite(float x) { return all_finite(&x, 1); }

// Widen rows [0, nb) of a corpus block to fp32 (row stride cs in, D out) in registers.
template <class V, class T>
inline void widen_rows(const T* c, int64_t cs, int64_t nb, int64_t D, float* out) {
  for (int64_t r = 0; r < nb; ++r) {
    const T* src = c + r * cs;
    float* dst = out + r * D;
    int64_t d = 0;
    for (; d + V::W <= D; d += V::W) V::store(dst + d, V::load(src + d));
    for (; d < D; ++d) dst[d] = to_float(src[d]);
  }
}

struct NonFinite {
  int64_t query = -1, row = -1;  // smallest query / corpus row seen with a non-finite score
  void note(int64_t m, int64_t j) {
    if (query < 0 || m < query) query = m;
    if (row < 0 || j < row) row = j;
  }
};

// The smallest bad query / row over per-unit (or per-thread) records, into the args' outputs.
template <class Args>
void report_nonfinite(const std::vector<NonFinite>& parts, Args& a) {
  NonFinite bad;
  for (const NonFinite& b : parts)
    if (b.query >= 0) bad.note(b.query, b.row);
  a.bad_query = bad.query;
  a.bad_row = bad.row;
}

template <class T>
struct TypeTag {
  using type = T;
};

// f(TypeTag<T>{}) with T the corpus element type (float, F16 or BF16).
template <class F>
void by_corpus_type(CorpusType t, F&& f) {
  switch (t) {
    case CorpusType::F32: f(TypeTag<float>{}); break;
    case CorpusType::F16: f(TypeTag<F16>{}); break;
    case CorpusType::BF16: f(TypeTag<BF16>{}); break;
  }
}

template <class V, class T>
void run_unit(const TopkArgs& a, int64_t q0, int64_t mq, int64_t j_begin, int64_t j_end, Cand* bufs,
              int64_t cap, int64_t* counts, float* tile, float* wide, NonFinite& bad) {
  const T* corpus = static_cast<const T*>(a.corpus);
  const int64_t D = a.D, cs = a.corpus_stride, k = a.k;
  std::vector<float> thr(mq, -std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < mq; ++i) counts[i] = 0;
  const bool widen = !std::is_same<T, float>::value && wide != nullptr && mq >= kWidenMinQueries;
  for (int64_t jb = j_begin; jb < j_end; jb += kBlockRows) {
    const int64_t nb = std::min(kBlockRows, j_end - jb);
    if (widen) {
      widen_rows<V, T>(corpus + jb * cs, cs, nb, D, wide);
      for (int64_t jg = 0; jg < nb; jg += V::NR) {
        const int nr = static_cast<int>(std::min<int64_t>(V::NR, nb - jg));
        const float* c = wide + jg * D;
        for (int64_t ig = 0; ig < mq; ig += V::MR) {
          const int mr = static_cast<int>(std::min<int64_t>(V::MR, mq - ig));
          micro_any<V, float>(mr, nr, a.queries + (q0 + ig) * D, D, c, D, D,
                              tile + ig * kBlockRows + jg, kBlockRows);
        }
      }
    } else {
      for (int64_t jg = 0; jg < nb; jg += V::NR) {
        const int nr = static_cast<int>(std::min<int64_t>(V::NR, nb - jg));
        const T* c = corpus + (jb + jg) * cs;
        for (int64_t ig = 0; ig < mq; ig += V::MR) {
          const int mr = static_cast<int>(std::min<int64_t>(V::MR, mq - ig));
          micro_any<V, T>(mr, nr, a.queries + (q0 + ig) * D, D, c, cs, D,
                          tile + ig * kBlockRows + jg, kBlockRows);
        }
      }
    }
    for (int64_t i = 0; i < mq; ++i) {
      float* row = tile + i * kBlockRows;
      if (a.row_scale)
        for (int64_t j = 0; j < nb; ++j) row[j] *= a.row_scale[jb + j];
      if (!all_finite(row, nb)) {
        int64_t j = 0;
        while (is_finite(row[j])) ++j;
        bad.note(q0 + i, jb + j);
      }
      Cand* buf = bufs + i * cap;
      int64_t n = counts[i];
      if (n + nb > cap) {
        n = cut_to_k(buf, n, k);
        thr[i] = buf[k - 1].s;
      }
      const float t = thr[i];
      for (int64_t j = 0; j < nb; ++j)
        if (row[j] > t) buf[n++] = Cand{row[j], jb + j};
      counts[i] = n;
    }
  }
  for (int64_t i = 0; i < mq; ++i) counts[i] = cut_to_k(bufs + i * cap, counts[i], k);
}

inline int resolve_threads(int threads) {
#ifdef DENSESCALE_OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

template <class V, class T>
void topk_impl(TopkArgs& a) {
  const int T_ = resolve_threads(a.threads);
  const int64_t M = a.M, N = a.N, k = a.k;
  // Query block: up to 32 register tiles (128 fp32 queries of D = 768 = 384 KiB, inside L2).
  const int64_t mb_max = V::MR * 32;
  const int64_t n_qb = (M + mb_max - 1) / mb_max;
  // Blocks of equal size rounded up to whole register tiles (no thin edge tile per block).
  const int64_t mb = ((M + n_qb - 1) / n_qb + V::MR - 1) / V::MR * V::MR;
  // Few query blocks: split the corpus too, aiming at >= 3 units per thread for balance, without
  // making shards so short that per-unit overhead shows.
  int64_t shards = 1;
  if (n_qb < 3 * T_) shards = (3 * T_ + n_qb - 1) / n_qb;
  shards = std::max<int64_t>(1, std::min<int64_t>(shards, N / (8 * kBlockRows)));
  const int64_t units = n_qb * shards;
  const int64_t slack = std::max<int64_t>(kBlockRows, std::min<int64_t>(k, 4096));
  const int64_t cap = k + slack;

  std::vector<std::vector<Cand>> unit_bufs(units);
  std::vector<std::vector<int64_t>> unit_counts(units);
  std::vector<NonFinite> unit_bad(units);
  const bool widen = !std::is_same<T, float>::value && mb >= kWidenMinQueries;

#pragma omp parallel num_threads(T_)
  {
    std::vector<float> tile(static_cast<size_t>(mb + V::MR) * kBlockRows);
    std::vector<float> wide(widen ? static_cast<size_t>(kBlockRows) * a.D : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t qb = u / shards, s = u % shards;
      const int64_t q0 = qb * mb, mq = std::min(mb, M - q0);
      const int64_t j0 = N * s / shards, j1 = N * (s + 1) / shards;
      unit_bufs[u].resize(static_cast<size_t>(mq * cap));
      unit_counts[u].resize(mq);
      run_unit<V, T>(a, q0, mq, j0, j1, unit_bufs[u].data(), cap, unit_counts[u].data(), tile.data(),
                     widen ? wide.data() : nullptr, unit_bad[u]);
    }
    // Merge: each query gathers its lists from the shards of its query block.
    std::vector<Cand> merged;
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      const int64_t qb = m / mb, i = m - qb * mb;
      merged.clear();
      for (int64_t s = 0; s < shards; ++s) {
        const int64_t u = qb * shards + s;
        const Cand* buf = unit_bufs[u].data() + i * cap;
        merged.insert(merged.end(), buf, buf + unit_counts[u][i]);
      }
      const int64_t n = cut_to_k(merged.data(), static_cast<int64_t>(merged.size()), k);
      std::sort(merged.begin(), merged.begin() + n, better);
      float* os = a.out_scores + m * k;
      int64_t* oi = a.out_ids + m * k;
      for (int64_t r = 0; r < n; ++r) {
        os[r] = merged[r].s;
        oi[r] = merged[r].id + a.id_offset;
      }
      for (int64_t r = n; r < k; ++r) {  // reached only when NaN scores were skipped
        os[r] = -std::numeric_limits<float>::infinity();
        oi[r] = -1;
      }
    }
  }
  report_nonfinite(unit_bad, a);
}

template <class V>
void topk_dispatch(TopkArgs& a) {
  by_corpus_type(a.corpus_type, [&](auto tag) { topk_impl<V, typename decltype(tag)::type>(a); });
}

// ---- candidate scoring: gather rows by id, R rows per pass sharing each query load ----

template <class V, class T, int R>
inline void dot_rows(const float* q, const T* const* rows, const T* const* next, int64_t D,
                     float* out) {
  typename V::reg acc[R];
  for (int r = 0; r < R; ++r) acc[r] = V::zero();
  int64_t d = 0;
  for (; d + V::W <= D; d += V::W) {
    const typename V::reg qv = V::load(q + d);
    for (int r = 0; r < R; ++r) {
      // The next group's rows are random memory: fetch them one step ahead, a line per step.
      if (next) __builtin_prefetch(next[r] + d, 0, 0);
      acc[r] = V::fma(qv, V::load(rows[r] + d), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = V::hsum(acc[r]);
    for (int64_t e = d; e < D; ++e) s += q[e] * to_float(rows[r][e]);
    out[r] = s;
  }
}

template <class V, class T>
void candidates_impl(CandidateArgs& a) {
  const int T_ = resolve_threads(a.threads);
  const T* corpus = static_cast<const T*>(a.corpus);
  const int64_t C = a.C, D = a.D, cs = a.corpus_stride;
  // 8 rows in flight per pass (8 independent accumulators and memory streams) while the next 8
  // rows are prefetched a line per step: random rows are latency-bound, so parallelism wins.
  constexpr int R = 8;
  std::vector<NonFinite> thread_bad(T_);
#pragma omp parallel num_threads(T_)
  {
    std::vector<const T*> ptrs(C + R);
    std::vector<int64_t> pos(C);
#ifdef DENSESCALE_OPENMP
    NonFinite& bad = thread_bad[omp_get_thread_num()];
#else
    NonFinite& bad = thread_bad[0];
#endif
#pragma omp for schedule(dynamic, 8)
    for (int64_t m = 0; m < a.M; ++m) {
      const int64_t* ids = a.ids + m * C;
      float* out = a.out + m * C;
      int64_t n = 0;
      for (int64_t c = 0; c < C; ++c) {
        if (ids[c] < 0) {
          out[c] = -std::numeric_limits<float>::infinity();
        } else {
          ptrs[n] = corpus + ids[c] * cs;
          pos[n++] = c;
        }
      }
      const float* q = a.queries + m * D;
      for (int64_t r = 0; r < std::min<int64_t>(n, R); ++r)  // the first group has no predecessor
        for (int64_t e = 0; e < std::min<int64_t>(D, 64); e += 16) __builtin_prefetch(ptrs[r] + e, 0, 0);
      float s[R];
      int64_t g = 0;
      for (; g + R <= n; g += R) {
        const T* const* next = (g + 2 * R <= n) ? &ptrs[g + R] : nullptr;
        dot_rows<V, T, R>(q, &ptrs[g], next, D, s);
        for (int r = 0; r < R; ++r) out[pos[g + r]] = s[r];
        if (!all_finite(s, R))
          for (int r = 0; r < R; ++r)
            if (!is_finite(s[r])) bad.note(m, ids[pos[g + r]]);
      }
      for (; g < n; ++g) {
        dot_rows<V, T, 1>(q, &ptrs[g], nullptr, D, s);
        out[pos[g]] = s[0];
        if (!is_finite(s[0])) bad.note(m, ids[pos[g]]);
      }
    }
  }
  report_nonfinite(thread_bad, a);
}

template <class V>
void candidates_dispatch(CandidateArgs& a) {
  by_corpus_type(a.corpus_type, [&](auto tag) { candidates_impl<V, typename decltype(tag)::type>(a); });
}

// ---- pair scoring: one corpus row against R queries per pass (the screen's rescoring) ----
// Per (query, row) the same operations as micro_tile: lane-wise fma(q, x, acc) over d in steps of
// W, hsum, then the scalar tail; so the scores equal search_topk's bit for bit.

template <class V, class T, int R>
inline void dot_queries(const T* row, const float* const* qs, int64_t D, float* out) {
  typename V::reg acc[R];
  for (int r = 0; r < R; ++r) acc[r] = V::zero();
  int64_t d = 0;
  for (; d + V::W <= D; d += V::W) {
    const typename V::reg cv = V::load(row + d);
    for (int r = 0; r < R; ++r) acc[r] = V::fma(V::load(qs[r] + d), cv, acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = V::hsum(acc[r]);
    for (int64_t e = d; e < D; ++e) s += qs[r][e] * to_float(row[e]);
    out[r] = s;
  }
}

template <class V, class T>
void pairs_impl(PairArgs& a) {
  const int T_ = resolve_threads(a.threads);
  const T* corpus = static_cast<const T*>(a.corpus);
  const int64_t D = a.D, cs = a.corpus_stride, P = a.P;
  constexpr int R = 4;
#pragma omp parallel num_threads(T_)
  {
#ifdef DENSESCALE_OPENMP
    const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
    const int64_t tid = 0, nth = 1;
#endif
    int64_t p = P * tid / nth;
    const int64_t p_end = P * (tid + 1) / nth;
    const float* qs[R];
    float s[R];
    while (p < p_end) {
      int64_t e = p + 1;
      while (e < p_end && a.rows[e] == a.rows[p]) ++e;
      const T* row = corpus + a.rows[p] * cs;
      if (e < p_end) {  // the next row: fetch it while this one is scored
        const char* nx = reinterpret_cast<const char*>(corpus + a.rows[e] * cs);
        const int64_t bytes = std::min<int64_t>(D * static_cast<int64_t>(sizeof(T)), 512);
        for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(nx + b, 0, 3);
      }
      int64_t g = p;
      for (; g + R <= e; g += R) {
        for (int r = 0; r < R; ++r) qs[r] = a.queries + a.qidx[g + r] * D;
        dot_queries<V, T, R>(row, qs, D, s);
        for (int r = 0; r < R; ++r) a.out[g + r] = s[r];
      }
      for (; g < e; ++g) {
        qs[0] = a.queries + a.qidx[g] * D;
        dot_queries<V, T, 1>(row, qs, D, s);
        a.out[g] = s[0];
      }
      p = e;
    }
  }
}

template <class V>
void pairs_dispatch(PairArgs& a) {
  by_corpus_type(a.corpus_type, [&](auto tag) { pairs_impl<V, typename decltype(tag)::type>(a); });
}

}  // namespace
}  // namespace densescale
