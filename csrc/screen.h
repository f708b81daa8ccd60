// Exact top-k by low-precision screening: screen every (query, row) pair in bf16 or int8 with a
// proven error bound, keep the rows that can still reach the k-th place, rescore only those with
// the exact fp32 kernel (search_kernel.h), so the result is the exact kernel's, bit for bit.
//
// ---- Notation ----
// q: an fp32 query (after the launcher's cosine normalisation), x_j: corpus row j as the exact
// kernel reads it (fp32, or fp16 / bf16 widened exactly), s_j = fl32(q . x_j) [* r_j]: the exact
// kernel's score (fp32 FMA accumulation in its fixed order; for cosine it then multiplies by the
// fp32 inverse norm r_j the launcher passes; rhat_j = r_j for cosine, 1 for inner product).
// u = 2^-24 (fp32 unit roundoff), gamma_n = n u / (1 - n u) (Higham, "Accuracy and Stability of
// Numerical Algorithms", 2nd ed., eq. 3.8 / Lemma 3.1; sec. 3.1: any summation order).
//
// ---- The copy (screen_pack, once per corpus object) ----
// Row j is scaled by a power of two sigma_j = 2^-(ilogb|x_j| + 1), so |x'_j| = |sigma_j x_j| lies
// in [0.5, 1) (exact: a power-of-two scale changes no significand bit). x~_j = bf16(x'_j) (round to
// nearest; values below bf16's normal range are set to 0 because AMX treats them as 0). The copy
// keeps, per row, the MEASURED residual rho_j = |x'_j - x~_j|_2 and nu_j = |x~_j|_2 (fp64 sums,
// relative error < (D + 2) 2^-53, absorbed by rounding up by 2^-30 and then to fp32 upwards).
// Queries get the same treatment per call: tau = 2^-(ilogb|q| + 1), q' = tau q, q~ = bf16(q'),
// rho_q = |q' - q~|_2, nu_q = |q~|_2; |q'| < 1.
//
// ---- The bound ----
// (1) Rounding of the inputs, exactly (no model): q'.x' - q~.x~ = q'.(x' - x~) + (q' - q~).x~, so
//     by Cauchy-Schwarz  |q'.x' - q~.x~| <= |q'| rho_j + rho_q nu_j.
//     (For bf16 RNE rho <= 2^-8 |x'| elementwise, i.e. this is at most (2u_bf16 + u_bf16^2)
//     |q'||x'|; the measured residuals are ~0.4x of that on typical data.)
// (2) The screen's arithmetic P = fl(q~ . x~): every product of two bf16 is exact in fp32 (8 + 8
//     significand bits) unless it underflows; the accumulation is D - 1 fp32 additions in an order
//     the hardware picks (AMX TDPBF16PS / AVX512-BF16 VDPBF16PS, whose order
//     screen_avx512bf16.cpp derives / a scalar FMA loop): |P - q~.x~| <= gamma_2D sum|q~_i
//     x~_i| + 2D 2^-126 <= gamma_2D nu_q nu_j + 2D 2^-126 (gamma_2D: a factor 2 of slack over
//     Higham's gamma_{D-1} covers a directed or double rounding per step; 2D 2^-126: every
//     product and partial sum flushed to zero if it falls below 2^-126: Intel SDM vol. 2,
//     TDPBF16PS "DAZ/FTZ").
// (3) The exact kernel's own error: |fl32(q . x_j) - q . x_j| <= gamma_D sum|q_i||x_ji| + D 2^-126
//     <= gamma_D |q||x_j| + D 2^-126 (Higham Lemma 3.1 + Cauchy-Schwarz; the underflow term is
//     the flush-to-zero worst case). Cosine: one more product by r_j adds u |s_j|.
// In "query units" (everything times tau, the comparison across rows of one query is unchanged)
// with w_j = rhat_j / sigma_j, the screen score S = fl(P w_j) and tau s_j differ by at most
//     E = |q'| (w_j rho_j + kappa rhat_j |x_j|)  +  (rho_q + (gamma_2D + 2^-20) nu_q) w_j nu_j  +  d_j
// with kappa = gamma_D + 2u ((3) and the cosine product), the 2^-20 nu_q w_j nu_j term covering
// the fp32 roundings of S = P w_j and of S +- E (|S| <= (1 + gamma_2D) nu_q nu_j w_j + ...), and
// d_j >= 4 rhat_j D 2^-126 tau_max + w_j 2D 2^-126 the absolute (underflow) terms, with
// tau <= 2^41 because the screen only takes norms in [2^-40, 2^40] (others: exact kernel).
// Every stored factor is rounded up and the per-query / per-row factors are inflated by 2^-20,
// which covers the two fp32 FMAs that evaluate E. So for every (query, row):
//     L_j = S - E <= tau s_j <= S + E = U_j.
//
// ---- The int8 format (the AVX512-VNNI, AVX-512BW and AVX2 engines) ----
// Same bound with other copies: row j is scaled by c_j = max_i |x_ji| / 127 (rounded up in fp32,
// any positive number: so |x_j / c_j| <= 127) and x~_j = rint(x_j / c_j), an int8 vector; rho_j =
// |x_j / c_j - x~_j|_2 and nu_j = |x~_j|_2 are measured as above (plus 127 sqrt(D) 2^-52 for the
// fp64 division), and w_j = rhat_j c_j (stored rounded to fp32). Queries likewise with c_q, tau =
// 1 / c_q, q' = q / c_q. Step (1) is unchanged: q'.(x_j / c_j) - q~.x~_j = q'.d_j + e_q.x~_j with
// d, e the rounding residuals, at most |q'| rho_j + rho_q nu_j. Step (2) has no error: VPDPBUSD
// multiplies unsigned bytes by signed bytes into int32 without saturation (Intel SDM vol. 2), so
// the corpus is stored as x~ + 128 (1..255) and P = sum (x~_i + 128) q~_i - 128 sum q~_i = q~.x~
// exactly (|sum| <= 255 * 127 * Dp < 2^31 for Dp <= 65536). The rounding of w_j to fp32 and of P to
// fp32 (exact below 2^24) are relative errors of u each on S = P w_j: inside the 2^-20 nu_q w_j
// nu_j term as above, so qB = rho_q + 2^-20 nu_q. tau <= 127 sqrt(D) 2^40 enters d_j. The copy is
// 1 byte per element (bf16: 2); the bound is ~4x wider (rows rounded to steps of max|x| / 127
// rather than to 8 significant bits), so the screen keeps more rows for the rescoring (about 1,450
// per query against 190 at k = 100 on Gaussian 768-d rows), paid back by VPDPBUSD doing 4 times
// the multiplies of an fp32 FMA per instruction at the same rate on this project's Xeon.
//
// AVX2 (screen_avx2.cpp; AVX-512BW, screen_avx512bw.cpp, the same on 512-bit registers) has no
// VPDPBUSD: VPMADDUBSW multiplies the unsigned by the signed bytes and adds adjacent pairs (dims
// 2i, 2i + 1) into int16 WITH saturation, then VPMADDWD by ones adds adjacent int16 pairs into
// int32 (exact). A pair sum is at most 255 (|q~_2i| + |q~_2i+1|), so its queries are scaled by
// c_q = max(max_i |q_i| / 127, max_i (|q_2i| + |q_2i+1|) / 128) (rounded up) and, where rounding
// both entries of a pair up passes 128, the larger one is moved one step towards 0: every pair
// keeps |q~_2i| + |q~_2i+1| <= 128, a pair sum <= 32,640 < 2^15, nothing saturates and P is the
// same exact integer q~.x~. Only rho_q grows (measured as always: ~1.2x the plain int8 step on
// Gaussian queries, where 7-bit queries, |q~| <= 63, would double it and keep 3x the rows);
// tau = 1 / c_q stays below the int8 tau_max, so the corpus copy and its d_j are the VNNI
// engine's.
//
// ---- Why the result is exact ----
// Let T be the k-th largest exact score. Since tau s_j >= L_j for every j, tau T >= t, the k-th
// largest L. Every row of the exact top k (ties at T included) has U_j >= tau s_j >= tau T >= t,
// so the candidate set {j : U_j >= t} contains it; rescoring the candidates with the exact
// kernel's arithmetic and selecting with its tie rule gives its result. During the scan t is the
// k-th largest L of some of the rows seen so far, in this corpus shard or another (<= the final
// one), so rows dropped then would also be dropped at the end. A query whose candidates exceed
// `cand_limit` (the bound is loose for this data) is flagged and the launcher runs the exact
// kernel for it.
#pragma once

#include <atomic>
#include <cstdint>

namespace densescale {

// One call's screening inputs (built by the driver in screen.cpp).
struct ScreenScan {
  const uint16_t* qpack = nullptr;  // bf16: (Mp, Dp) bf16 bits, row-major, zero padded
  const int8_t* q8 = nullptr;       // int8: (Mp, Dp) q~, zero padded, query_index8 layout
  const int32_t* qcorr = nullptr;   // int8: (Mp,) 128 sum q~ (the unsigned corpus' offset)
  int64_t Dp = 0;                   // D rounded up to 32 (bf16) or 64 (int8)
  const float* qA = nullptr;        // (M,) |q'| (inflated)
  const float* qB = nullptr;        // (M,) rho_q + (gamma_2D + 2^-20) nu_q (inflated)
  const uint16_t* cpack = nullptr;  // bf16: groups of 16 rows, VNNI tiles (see screen_kernel.h)
  const uint8_t* c8 = nullptr;      // int8: x~ + 128, groups of 16 rows, 4-byte VNNI groups
  const float* meta = nullptr;      // (4, Np): w_j, a_j = w rho + kappa rhat |x|, b_j = w nu, d_j
  int64_t Np = 0;                   // rows rounded up to 32
  int64_t N = 0;                    // real rows
  int64_t k = 0;
  float bound_scale = 1.0f;  // 1 in production; tests shrink it to show a wrong bound is caught
};

// One unit of work: queries [m0, m0 + mq) (m0 a multiple of 32) x rows [j0, j1) (multiples of 32)
// and its candidate lists, structure of arrays (mq, cap).
struct ScreenUnit {
  int64_t m0 = 0, mq = 0, j0 = 0, j1 = 0, cap = 0;
  int64_t* slot_used = nullptr;  // (mq,) in/out: the most entries each query's list slot has
                                 // held (its 16 spare included), over the thread's units
  float* u = nullptr;        // upper bounds U
  float* l = nullptr;        // lower bounds L
  int32_t* id = nullptr;     // local row ids
  int64_t* count = nullptr;  // (mq,)
  uint8_t* skip = nullptr;   // (mq,) 1: query not screened (fallback), set on input or overflow
  float* thr = nullptr;      // (mq,) scratch: running thresholds
  // (mq,) the thresholds of these queries shared by every unit of their query block: each is the
  // k-th largest L of some rows of the corpus, so any unit may prune with the largest one.
  std::atomic<float>* shared_thr = nullptr;
};

bool amx_usable();  // CPU has AMX-BF16 and the OS granted the tile state to this process
bool avx512bf16_usable();  // CPU has AVX-512 (F/BW/VL/DQ) and AVX512-BF16, built with it
bool avx512vnni_usable();  // CPU has AVX-512 (F/BW/VL/DQ) and AVX512-VNNI, built with it
void screen_unit_amx(const ScreenScan& s, ScreenUnit& u);
void screen_unit_avx512bf16(const ScreenScan& s, ScreenUnit& u);
void screen_unit_avx512vnni(const ScreenScan& s, ScreenUnit& u);
void screen_unit_avx512bw(const ScreenScan& s, ScreenUnit& u);
void screen_unit_avx2(const ScreenScan& s, ScreenUnit& u);
void screen_unit_emulated(const ScreenScan& s, ScreenUnit& u);
void screen_unit_emulated_int8(const ScreenScan& s, ScreenUnit& u);
// S and E of every (query, row) pair (queries [0, M)), query units, for the bound tests.
void screen_dump_amx(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_avx512bf16(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_avx512vnni(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_avx512bw(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_avx2(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_emulated(const ScreenScan& s, int64_t M, float* S, float* E);
void screen_dump_emulated_int8(const ScreenScan& s, int64_t M, float* S, float* E);
// One candidate list compacted by the AVX-512 epilogue (screen_kernel.h, compact_list), for the
// tests of its selection.
int64_t screen_compact_avx512(float* u, float* l, int32_t* id, int64_t n, int64_t k, float& t);

}  // namespace densescale
