// The screen's copy and query preparation (screen_pack.cpp), for the driver in screen.cpp. Only
// generic-compiled files include this (it instantiates std::vector members).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops.h"

namespace densescale {

// Queries in bf16 (Mp x Dp, zero padded) with their bound factors (screen.h): qA = |q'|,
// qB = rho_q + (gamma_2D + 2^-20) nu_q (both inflated), skip = 1 for zero / out-of-range queries
// and the padding up to Mp = M rounded up to 32.
// int8 (screen.h, "The int8 format"): q8 holds q~ instead of qpack, qcorr = 128 sum q~.
struct Prepared {
  std::vector<uint16_t> qpack;
  std::vector<int8_t> q8;
  std::vector<int32_t> qcorr;
  std::vector<float> qA, qB;
  std::vector<double> tau;  // (Mp,) the query units: screen scores are tau times the scores
  std::vector<uint8_t> skip;
};

// How an engine reads the queries: bf16, int8 (|q~| <= 127), or int8 with every pair of dims
// (2i, 2i + 1) also within |q~_2i| + |q~_2i+1| <= 128 (the AVX2 engine: screen.h).
enum class QueryCode { Bf16, Int8, Int8Pairs };

Prepared prep_queries(const float* q, int64_t M, int64_t D, int64_t Dp, int threads,
                      QueryCode code);

// Python binding: the bf16 or int8 copy of a corpus and its per-row bound factors (see
// register_screen).
pybind11::bool_ screen_pack(uintptr_t corpus, int64_t N, int64_t D, int64_t corpus_stride,
                            int ctype, uintptr_t row_scale, uintptr_t cpack, uintptr_t meta,
                            int64_t Np, int64_t Dp, int threads, const std::string& format);

}  // namespace densescale
