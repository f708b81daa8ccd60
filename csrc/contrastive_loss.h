// Fused contrastive loss on the CPU: the table of per-ISA kernels the driver (contrastive_loss.cpp) calls.
//
// Layout used by every kernel below: a block of R query rows keeps its scores transposed,
// T[j][i] = s * c_j . q_i (j = candidate column, i = row in the block, leading dimension ldt), so
// per-row statistics (max, sum of exp, softmax gradient) are vector operations over i and the
// three products of a block are one GEMM primitive with strided A:
//   scores   T      = C_cols  . Q_R^T        (A = candidate rows, B = Q_R^T packed once per block)
//   dC_cols += G^T Q_R  (G stored as T)       (A = T rows,        B = Q_R)
//   U_R    += G . C_cols                      (A = T transposed,  B = candidate rows)
#pragma once

#include <cmath>
#include <cstdint>

namespace densescale {
namespace loss {

// C[m][n] = (accumulate ? C[m][n] : 0) + alpha * sum_k A(m,k) * B[k][n] for m < M, n < N, where
// A(m,k) = a[m*a_rs + k*a_cs] and B is row-major with leading dimension ldb.
using GemmFn = void (*)(long M, long N, long K, const float* a, long a_rs, long a_cs,
                        const float* b, long ldb, float* c, long ldc, float alpha, bool accumulate);
// For each of nj rows x[j][0..n): mx[i] = max(mx[i], x[j][i]), except that a NaN or -inf score
// makes mx[i] NaN for good. Scores come from the GEMM (masked entries hold kMaskedScore, never
// -inf), so a NaN/-inf score means a non-finite input row: the NaN max carries it into the
// log-sum-exp and the loss, where the launcher detects it (no pass over the inputs). A plain max
// drops NaN (maxps returns its second operand), and a -inf score vanishes from a log-sum-exp.
using ColMaxFn = void (*)(const float* x, long nj, long n, long ldx, float* mx);
// For each of nj rows: sum[i] += exp(x[j][i] - mx[i]).
using ColSumExpFn = void (*)(const float* x, long nj, long n, long ldx, const float* mx, float* sum);
// In place, for each of nj rows: x[j][i] = w[i] * exp(x[j][i] - lse[i]) + jw[j] * exp(x[j][i] - jlse[j])
// (softmax gradient of the rows; the second term, the passage-to-query half of the symmetric loss,
// only where jw is non-null and jw[j] != 0).
using GradRowsFn = void (*)(float* x, long nj, long n, long ldx, const float* lse, const float* w,
                            const float* jlse, const float* jw);
// max_i x[i] and sum_i exp(x[i] - m) of one row.
using MaxFn = float (*)(const float* x, long n);
using SumExpFn = float (*)(const float* x, long n, float m);

// The score of a masked (row, column): exp(kMaskedScore - m) is 0 for every finite row max m, and
// unlike -inf it is told apart from a score that came out -inf (see ColMaxFn).
constexpr float kMaskedScore = -3.4028234663852886e38f;  // -FLT_MAX

// A masked entry keeps a non-finite score visible (NaN) instead of hiding it.
inline float masked_score(float x) { return x - x == 0.f ? kMaskedScore : NAN; }

struct Kernels {
  const char* name;
  int mr;  // micro-tile rows: column chunks are aligned to it
  GemmFn gemm;
  ColMaxFn col_max;
  ColSumExpFn col_sumexp;
  GradRowsFn grad_rows;
  MaxFn max;
  SumExpFn sumexp;
};

const Kernels& kernels_generic();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();

}  // namespace loss
}  // namespace densescale
