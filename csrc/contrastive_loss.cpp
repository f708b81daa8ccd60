// Fused contrastive (InfoNCE) loss on the CPU, forward and gradients in one pass over row blocks.
//
// Math (python/densescale/ops/_loss_spec.py): x_ij = s * q_i . c_j over valid columns j,
//   loss_i = lse_j x_ij - x_{i,t_i}   (symmetric: averaged with the passage-to-query direction).
// With G = dL/dx (weights w_i = dL/dloss_i):  G_ij = w_i (softmax_ij - [j = t_i]) (+ column part),
//   dq_i = s * sum_j G_ij c_j,   dc_j = s * sum_i G_ij q_i,   dscale = sum_i q_i . (sum_j G_ij c_j).
//
// Schedule: rows are processed in blocks of R. A block keeps its scores for every dense column,
// transposed (T[j][i], see contrastive_loss.h). Threads split the columns: each computes its
// columns' scores (2*R*N*D FLOPs per block in total), partial row max / sum-exp, then after a
// barrier the merged log-sum-exp, turns its scores into G in place, adds G^T Q_R into its own
// (disjoint) rows of dC and G C into a per-thread R x D partial of dQ (2 + 2 FLOPs per score), and
// after a second barrier the threads sum the partials over disjoint rows. Total 6*B*N*D FLOPs, like
// eager torch, with O(R*N + T*R*D) scratch instead of several B x N matrices.
// Symmetric mode needs every row for a column's statistics, so it runs a statistics-only pass
// first (2*B*N*D FLOPs) and the gradient pass second: 8*B*N*D in total.
// in_batch=False: the dense GEMM covers only the shared pool; each query's own group (G columns)
// is handled row by row (B*G*D work).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "contrastive_loss.h"
#include "cpu_features.h"
#include "ops.h"

#ifdef DENSESCALE_OPENMP
#include <omp.h>
#endif

namespace densescale {
namespace loss {
namespace {

// ---------------------------------------------------------------- generic (scalar) kernels
void gemm_generic(long M, long N, long K, const float* a, long a_rs, long a_cs, const float* b,
                  long ldb, float* c, long ldc, float alpha, bool accumulate) {
  constexpr long NB = 64;
  float acc[NB];
  for (long m = 0; m < M; ++m) {
    for (long n0 = 0; n0 < N; n0 += NB) {
      const long nb = std::min(NB, N - n0);
      for (long n = 0; n < nb; ++n) acc[n] = 0.f;
      for (long k = 0; k < K; ++k) {
        const float av = a[m * a_rs + k * a_cs];
        const float* bk = b + k * ldb + n0;
        for (long n = 0; n < nb; ++n) acc[n] += av * bk[n];
      }
      float* cm = c + m * ldc + n0;
      for (long n = 0; n < nb; ++n) cm[n] = (accumulate ? cm[n] : 0.f) + alpha * acc[n];
    }
  }
}

void col_max_generic(const float* x, long nj, long n, long ldx, float* mx) {
  for (long j = 0; j < nj; ++j)
    for (long i = 0; i < n; ++i) {
      const float v = x[j * ldx + i];  // !(v > -inf): NaN or -inf; a NaN mx stays (v > NaN false)
      mx[i] = !(v > -INFINITY) ? NAN : (v > mx[i] ? v : mx[i]);
    }
}

void col_sumexp_generic(const float* x, long nj, long n, long ldx, const float* mx, float* sum) {
  for (long j = 0; j < nj; ++j)
    for (long i = 0; i < n; ++i) sum[i] += std::exp(x[j * ldx + i] - mx[i]);
}

void grad_rows_generic(float* x, long nj, long n, long ldx, const float* lse, const float* w,
                       const float* jlse, const float* jw) {
  for (long j = 0; j < nj; ++j) {
    float* xj = x + j * ldx;
    const bool col = jw != nullptr && jw[j] != 0.f;
    for (long i = 0; i < n; ++i) {
      const float v = xj[i];
      xj[i] = w[i] * std::exp(v - lse[i]) + (col ? jw[j] * std::exp(v - jlse[j]) : 0.f);
    }
  }
}

float row_max_generic(const float* x, long n) {
  float m = -INFINITY;
  for (long i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float row_sumexp_generic(const float* x, long n, float m) {
  float s = 0.f;
  for (long i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return s;
}

// ---------------------------------------------------------------- input conversion
enum DType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) { man <<= 1; --exp; }
      bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void to_float(const void* src, int dtype, long n, float* dst, int threads) {
  (void)threads;
  if (dtype == kFloat16) {
    const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; ++i) dst[i] = half_to_float(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
      std::memcpy(dst + i, &bits, 4);
    }
  }
}

// ---------------------------------------------------------------- the fused pass
struct Problem {
  const float* q = nullptr;    // (B, D) fp32
  const float* p = nullptr;    // (Np, D) fp32
  const float* neg = nullptr;  // (K, D) fp32 or null
  const int64_t* doc_ids = nullptr;
  long B = 0, Np = 0, K = 0, D = 0, G = 1, row_offset = 0;
  bool in_batch = true, symmetric = false;
  float scale = 1.f;
  const float* weights = nullptr;  // (B,) or null = unit weights
  int threads = 1;
  long block_rows = 0;  // 0 = choose from N
  const Kernels* kern = nullptr;

  long N() const { return Np + K; }
  const float* cand(long j) const { return j < Np ? p + j * D : neg + (j - Np) * D; }
  float weight(long i) const { return weights ? weights[i] : 1.f; }
  long target(long i) const { return (row_offset + i) * G; }
};

struct Outputs {
  float* loss = nullptr;       // (B,) or null
  float* dq = nullptr;         // (B, D) or null: gradients wanted when non-null
  float* dc = nullptr;         // (N, D), zero-initialised by the caller
  float* row_lse = nullptr;    // (B,) scratch
  float* xt = nullptr;         // (B,) target scores
  float* col_max = nullptr;    // (B,) symmetric statistics pass
  float* col_sum = nullptr;    // (B,)
  const float* col_lse = nullptr;  // (B,) known column log-sum-exp (symmetric gradient pass)
  double dscale = 0.0;
};

inline float merge_lse(const float* pm, const float* ps, int T, long stride, long i) {
  float m = -FLT_MAX;
  for (int t = 0; t < T; ++t) {  // a NaN partial max (non-finite score) wins and stays
    const float v = pm[t * stride + i];
    if (v > m || v != v) m = v;
    if (m != m) break;
  }
  float s = 0.f;
  for (int t = 0; t < T; ++t) s += ps[t * stride + i] * std::exp(pm[t * stride + i] - m);
  return m + std::log(s);
}

inline float dot(const float* a, const float* b, long n) {
  float s = 0.f;
  for (long k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

// Duplicate-id lookup: dense columns grouped by doc id, so each row visits only its masked columns.
struct DupIndex {
  std::unordered_map<int64_t, std::vector<long>> cols;
  const std::vector<long>* find(int64_t id) const {
    auto it = cols.find(id);
    return it == cols.end() ? nullptr : &it->second;
  }
};

// One sweep over all row blocks. need_grad: produce G and its products; col_stats: accumulate the
// symmetric column statistics (statistics-only pass).
void run_pass(const Problem& P, Outputs& O, bool need_grad, bool col_stats) {
  const Kernels& kn = *P.kern;
  const long B = P.B, D = P.D, Gs = P.G, Np = P.Np, N = P.N();
  const long d0 = P.in_batch ? 0 : Np, d1 = N, Nd = d1 - d0;  // dense columns
  int T = std::max(1, P.threads);
  long R = P.block_rows;
  if (R <= 0) {  // scores of one block <= 16 MiB: big blocks amortise the dC read-modify-write
    R = (16l << 20) / (4 * std::max(1l, Nd));
    R = std::max(16l, std::min(512l, R));
  }
  R = std::min(R, B);
  const long ldt = (R + 15) / 16 * 16;
  const float s = P.scale;

  std::vector<float> Tbuf(static_cast<size_t>(std::max(1l, Nd)) * ldt, 0.f);
  std::vector<float> QT(static_cast<size_t>(D) * ldt, 0.f);
  std::vector<float> pmax(static_cast<size_t>(T) * ldt), psum(static_cast<size_t>(T) * ldt);
  std::vector<float> xt(ldt, 0.f), wr(ldt, 0.f);
  std::vector<float> xg(P.in_batch ? 1 : static_cast<size_t>(R) * Gs);
  std::vector<float> Upart(need_grad ? static_cast<size_t>(T) * R * D : 1);
  std::vector<double> dscale_t(T, 0.0);

  DupIndex dup;
  if (P.doc_ids)
    for (long j = d0; j < d1; ++j) dup.cols[P.doc_ids[j]].push_back(j);

  // Per-column extra term of the symmetric gradient (column log-sum-exp and weight / 2).
  std::vector<float> jlse, jw;
  if (need_grad && P.symmetric) {
    jlse.assign(Nd, 0.f);
    jw.assign(Nd, 0.f);
    for (long m = 0; m < B; ++m) {
      const long j = P.target(m) - d0;
      jlse[j] = O.col_lse[m];
      jw[j] = 0.5f * P.weight(m);
    }
  }

#ifdef DENSESCALE_OPENMP
#pragma omp parallel num_threads(T)
#endif
  {
#ifdef DENSESCALE_OPENMP
    const int tid = omp_get_thread_num();
    const int nth = omp_get_num_threads();
#define DS_BARRIER _Pragma("omp barrier")
#else
    const int tid = 0;
    const int nth = 1;
#define DS_BARRIER
#endif
    // Column split between the threads that actually run, aligned to the micro-tile.
    auto split = [&](int t) { return t >= nth ? d1 : d0 + (Nd * t / nth) / kn.mr * kn.mr; };
    const long cc0 = split(tid), cc1 = split(tid + 1);
    std::vector<float> lse(ldt, 0.f);
    float* pm = pmax.data() + static_cast<size_t>(tid) * ldt;
    float* ps = psum.data() + static_cast<size_t>(tid) * ldt;
    float* Ut = need_grad ? Upart.data() + static_cast<size_t>(tid) * R * D : nullptr;

    for (long i0 = 0; i0 < B; i0 += R) {
      const long nr = std::min(R, B - i0);
      const long nrp = (nr + 15) / 16 * 16;  // vector routines run on whole vectors; pads are 0
      const long r0 = nr * tid / nth, r1 = nr * (tid + 1) / nth;  // this thread's rows
      // Phase 0: Q_R^T (pads zero) and the rows' weights.
      for (long d = D * tid / nth; d < D * (tid + 1) / nth; ++d) {
        float* qt = QT.data() + d * ldt;
        for (long i = 0; i < nr; ++i) qt[i] = P.q[(i0 + i) * D + d];
        for (long i = nr; i < ldt; ++i) qt[i] = 0.f;
      }
      for (long i = r0; i < r1; ++i) wr[i] = (P.symmetric ? 0.5f : 1.f) * P.weight(i0 + i);
      if (tid == 0)
        for (long i = nr; i < ldt; ++i) wr[i] = 0.f;
      DS_BARRIER

      // Phase 1: scores of this thread's columns, masks, partial row statistics.
      for (long js = cc0; js < cc1;) {
        const long je = js < Np ? std::min(cc1, Np) : cc1;
        kn.gemm(je - js, nrp, D, P.cand(js), D, 1, QT.data(), ldt, Tbuf.data() + (js - d0) * ldt,
                ldt, s, false);
        js = je;
      }
      if (P.doc_ids) {
        for (long i = 0; i < nr; ++i) {
          const long t = P.target(i0 + i);
          const auto* cols = dup.find(P.doc_ids[t]);
          if (!cols) continue;
          for (long j : *cols)
            if (j != t && j >= cc0 && j < cc1) {
              float& x = Tbuf[(j - d0) * ldt + i];
              x = masked_score(x);
            }
        }
      }
      if (P.in_batch)
        for (long i = 0; i < nr; ++i) {
          const long t = P.target(i0 + i);
          if (t >= cc0 && t < cc1) xt[i] = Tbuf[(t - d0) * ldt + i];
        }
      std::fill(pm, pm + ldt, -FLT_MAX);
      std::fill(ps, ps + ldt, 0.f);
      kn.col_max(Tbuf.data() + (cc0 - d0) * ldt, cc1 - cc0, nrp, ldt, pm);
      kn.col_sumexp(Tbuf.data() + (cc0 - d0) * ldt, cc1 - cc0, nrp, ldt, pm, ps);
      if (!P.in_batch) {  // own group, row by row, merged into this thread's partial statistics
        for (long i = r0; i < r1; ++i) {
          const long t = P.target(i0 + i);
          const float* qi = P.q + (i0 + i) * D;
          float* xi = xg.data() + i * Gs;
          float m = pm[i];
          for (long g = 0; g < Gs; ++g) {
            const bool masked = g > 0 && P.doc_ids && P.doc_ids[t + g] == P.doc_ids[t];
            float v = s * dot(qi, P.p + (t + g) * D, D);
            // as col_max: a NaN / -inf score (non-finite input) makes the row's max NaN
            v = masked ? masked_score(v) : v;
            xi[g] = v;
            m = (!(v > -INFINITY) || m != m) ? NAN : (v > m ? v : m);
          }
          float sum = ps[i] * std::exp(pm[i] - m);
          for (long g = 0; g < Gs; ++g) sum += std::exp(xi[g] - m);
          pm[i] = m;
          ps[i] = sum;
          xt[i] = xi[0];
        }
      }
      if (col_stats) {  // symmetric: online column statistics of this thread's positive columns
        for (long m = 0; m < B; ++m) {
          const long j = P.target(m);
          if (j < cc0 || j >= cc1) continue;
          const float* xj = Tbuf.data() + (j - d0) * ldt;
          const float bm = std::max(kn.max(xj, nr), -FLT_MAX);
          const float bs = kn.sumexp(xj, nr, bm);
          const float mm = std::max(O.col_max[m], bm);
          O.col_sum[m] = O.col_sum[m] * std::exp(O.col_max[m] - mm) + bs * std::exp(bm - mm);
          O.col_max[m] = mm;
        }
      }
      DS_BARRIER

      // Phase 2: merged log-sum-exp, loss, and (need_grad) G and its products.
      for (long i = 0; i < nr; ++i) lse[i] = merge_lse(pmax.data(), psum.data(), nth, ldt, i);
      for (long i = nr; i < ldt; ++i) lse[i] = 0.f;
      for (long i = r0; i < r1; ++i) {
        O.row_lse[i0 + i] = lse[i];
        O.xt[i0 + i] = xt[i];
        if (O.loss && !P.symmetric) O.loss[i0 + i] = lse[i] - xt[i];
      }
      if (need_grad) {
        float* Tc = Tbuf.data() + (cc0 - d0) * ldt;
        kn.grad_rows(Tc, cc1 - cc0, nrp, ldt, lse.data(), wr.data(),
                     jw.empty() ? nullptr : jlse.data() + (cc0 - d0),
                     jw.empty() ? nullptr : jw.data() + (cc0 - d0));
        if (P.in_batch)
          for (long i = 0; i < nr; ++i) {
            const long t = P.target(i0 + i);
            if (t >= cc0 && t < cc1)
              Tbuf[(t - d0) * ldt + i] -= wr[i] + (P.symmetric ? 0.5f * P.weight(i0 + i) : 0.f);
          }
        std::fill(Ut, Ut + nr * D, 0.f);
        for (long js = cc0; js < cc1;) {
          const long je = js < Np ? std::min(cc1, Np) : cc1;
          const float* Tj = Tbuf.data() + (js - d0) * ldt;
          // dC_cols += G^T Q_R  (rows of dC owned by this thread)
          kn.gemm(je - js, D, nr, Tj, ldt, 1, P.q + i0 * D, D, O.dc + js * D, D, 1.f, true);
          // U_R += G C_cols  (this thread's partial)
          kn.gemm(nr, D, je - js, Tj, 1, ldt, P.cand(js), D, Ut, D, 1.f, true);
          js = je;
        }
        if (!P.in_batch) {
          for (long i = r0; i < r1; ++i) {
            const long t = P.target(i0 + i);
            const float* qi = P.q + (i0 + i) * D;
            float* ui = Ut + i * D;
            for (long g = 0; g < Gs; ++g) {
              const float gv = wr[i] * (std::exp(xg[i * Gs + g] - lse[i]) - (g == 0 ? 1.f : 0.f));
              if (gv == 0.f) continue;
              const float* cg = P.p + (t + g) * D;
              float* dcg = O.dc + (t + g) * D;
              for (long d = 0; d < D; ++d) {
                ui[d] += gv * cg[d];
                dcg[d] += gv * qi[d];
              }
            }
          }
        }
      }
      DS_BARRIER

      // Phase 3: dq rows = s * sum of the partials; dscale += q_i . U_i.
      if (need_grad) {
        double ds = 0.0;
        for (long i = r0; i < r1; ++i) {
          float* dqi = O.dq + (i0 + i) * D;
          const float* qi = P.q + (i0 + i) * D;
          for (long d = 0; d < D; ++d) {
            float u = 0.f;
            for (int t = 0; t < nth; ++t) u += Upart[(static_cast<size_t>(t) * R + i) * D + d];
            dqi[d] = s * u;
            ds += static_cast<double>(qi[d]) * u;
          }
        }
        dscale_t[tid] += ds;
      }
    }
    if (need_grad) {  // dC was accumulated with G; apply the scale once
      DS_BARRIER
      for (long j = N * tid / nth; j < N * (tid + 1) / nth; ++j) {
        float* dcj = O.dc + j * D;
        for (long d = 0; d < D; ++d) dcj[d] *= s;
      }
    }
#undef DS_BARRIER
  }
  for (int t = 0; t < T; ++t) O.dscale += dscale_t[t];
}

const Kernels& pick_kernels(int isa_cap) {
  int isa = static_cast<int>(active_isa());
  if (isa_cap >= 0) isa = std::min(isa, isa_cap);
  if (isa >= static_cast<int>(Isa::Avx512)) return kernels_avx512();
  if (isa >= static_cast<int>(Isa::Avx2)) return kernels_avx2();
  return kernels_generic();
}

// Python entry point: raw pointers (validated by densescale.ops._loss_cpp), GIL released.
double contrastive_loss_cpu(uintptr_t q, uintptr_t p, uintptr_t neg, uintptr_t doc_ids, int dtype,
                            long B, long Np, long K, long D, long G, bool in_batch, bool symmetric,
                            long row_offset, double scale, uintptr_t weights, uintptr_t col_lse_in,
                            uintptr_t loss, uintptr_t dq, uintptr_t dc, uintptr_t col_lse_out,
                            int threads, long block_rows, int isa) {
  if (B <= 0 || D <= 0 || G <= 0 || Np < (row_offset + B) * G || K < 0)
    throw std::invalid_argument("contrastive_loss_cpu: inconsistent sizes");
  if (symmetric && (!in_batch || row_offset != 0 || Np != B * G))
    throw std::invalid_argument("contrastive_loss_cpu: symmetric needs in_batch, no row offset");
  if (dtype < 0 || dtype > 2) throw std::invalid_argument("contrastive_loss_cpu: bad dtype code");
  Problem P;
  P.B = B; P.Np = Np; P.K = K; P.D = D; P.G = G; P.row_offset = row_offset;
  P.in_batch = in_batch; P.symmetric = symmetric; P.scale = static_cast<float>(scale);
  P.weights = reinterpret_cast<const float*>(weights);
  P.doc_ids = reinterpret_cast<const int64_t*>(doc_ids);
#ifdef DENSESCALE_OPENMP
  P.threads = threads > 0 ? threads : omp_get_max_threads();
#else
  P.threads = 1;
#endif
  P.block_rows = block_rows;
  P.kern = &pick_kernels(isa);

  // fp16/bf16: one fp32 copy of the inputs (O((N + B) * D)); fp32 is used in place.
  std::vector<float> qf, pf, nf;
  if (dtype == kFloat32) {
    P.q = reinterpret_cast<const float*>(q);
    P.p = reinterpret_cast<const float*>(p);
    P.neg = reinterpret_cast<const float*>(neg);
  } else {
    qf.resize(B * D); pf.resize(Np * D); nf.resize(K * D);
    to_float(reinterpret_cast<const void*>(q), dtype, B * D, qf.data(), P.threads);
    to_float(reinterpret_cast<const void*>(p), dtype, Np * D, pf.data(), P.threads);
    if (K) to_float(reinterpret_cast<const void*>(neg), dtype, K * D, nf.data(), P.threads);
    P.q = qf.data(); P.p = pf.data(); P.neg = K ? nf.data() : nullptr;
  }

  std::vector<float> row_lse(B), xt(B), cmax, csum, clse;
  Outputs O;
  O.row_lse = row_lse.data();
  O.xt = xt.data();
  float* loss_out = reinterpret_cast<float*>(loss);
  const bool need_grad = dq != 0;
  if (symmetric) {
    if (col_lse_in) {
      O.col_lse = reinterpret_cast<const float*>(col_lse_in);
    } else {  // statistics pass: row and column log-sum-exp, hence the loss
      cmax.assign(B, -FLT_MAX);
      csum.assign(B, 0.f);
      clse.resize(B);
      O.col_max = cmax.data();
      O.col_sum = csum.data();
      run_pass(P, O, false, true);
      for (long m = 0; m < B; ++m) clse[m] = cmax[m] + std::log(csum[m]);
      O.col_lse = clse.data();
      if (loss_out)
        for (long i = 0; i < B; ++i)
          loss_out[i] = 0.5f * ((row_lse[i] - xt[i]) + (clse[i] - xt[i]));
    }
    if (col_lse_out) std::memcpy(reinterpret_cast<float*>(col_lse_out), O.col_lse, B * 4);
    if (need_grad) {
      O.dq = reinterpret_cast<float*>(dq);
      O.dc = reinterpret_cast<float*>(dc);
      run_pass(P, O, true, false);
    }
  } else {
    O.loss = loss_out;
    O.dq = reinterpret_cast<float*>(dq);
    O.dc = reinterpret_cast<float*>(dc);
    run_pass(P, O, need_grad, false);
  }
  return O.dscale;
}

}  // namespace

const Kernels& kernels_generic() {
  static const Kernels k{"generic", 4, gemm_generic, col_max_generic, col_sumexp_generic,
                         grad_rows_generic, row_max_generic, row_sumexp_generic};
  return k;
}

}  // namespace loss

void register_contrastive_loss(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("contrastive_loss_cpu", &loss::contrastive_loss_cpu, py::call_guard<py::gil_scoped_release>(),
        py::arg("q"), py::arg("p"), py::arg("neg"), py::arg("doc_ids"), py::arg("dtype"),
        py::arg("B"), py::arg("Np"), py::arg("K"), py::arg("D"), py::arg("G"), py::arg("in_batch"),
        py::arg("symmetric"), py::arg("row_offset"), py::arg("scale"), py::arg("weights"),
        py::arg("col_lse_in"), py::arg("loss"), py::arg("dq"), py::arg("dc"),
        py::arg("col_lse_out"), py::arg("threads"), py::arg("block_rows"), py::arg("isa"),
        "Fused contrastive loss on raw data pointers (see densescale.ops._loss_cpp). Writes the "
        "per-query loss (when loss != 0), dq (B, D) and dc (N, D) fp32 gradients of "
        "sum_i w_i loss_i (when dq != 0; dc must be zeroed) and returns d/dscale. dtype: "
        "0 fp32, 1 fp16, 2 bf16. isa: -1 best, 0 generic, 1 avx2, 2 avx512 (capped by the CPU).");
  m.def("contrastive_loss_isa", [](int isa) { return std::string(loss::pick_kernels(isa).name); },
        py::arg("isa") = -1, "Kernel set contrastive_loss_cpu uses for an isa cap.");
}

}  // namespace densescale
