// Exact top-k search and candidate scoring on the CPU: the argument blocks shared by every ISA path
// and the entry points each ISA file defines (search_avx2.cpp, search_avx512.cpp, generic in
// search.cpp). The algorithms themselves live in search_kernel.h.
#pragma once

#include <cstdint>

namespace densescale {

// Storage type of the corpus rows; queries are always fp32 (the launcher converts them).
enum class CorpusType { F32 = 0, F16 = 1, BF16 = 2 };

// The inputs every scoring entry point reads: queries (M, D) fp32 and corpus rows (N, D).
struct ScoreArgs {
  const float* queries = nullptr;  // (M, D) fp32, row-major contiguous
  int64_t M = 0, D = 0;
  const void* corpus = nullptr;  // (N, D) rows, row stride `corpus_stride` elements
  int64_t N = 0, corpus_stride = 0;
  CorpusType corpus_type = CorpusType::F32;
  int threads = 1;
};

// scores[m, j] = row_scale[j] * sum_d queries[m, d] * corpus[j, d]; the k best per query (score
// descending, ties by smaller id) go to out_scores / out_ids (M, k) with ids offset by id_offset.
struct TopkArgs : ScoreArgs {
  const float* row_scale = nullptr;  // optional (N,) multiplier per corpus row (cosine)
  int64_t k = 0;
  int64_t id_offset = 0;
  float* out_scores = nullptr;  // (M, k)
  int64_t* out_ids = nullptr;   // (M, k)
  // Out: the smallest query index and the smallest corpus row (local, without id_offset) that
  // produced a non-finite score, -1 when every score was finite. A NaN/Inf in an input row makes
  // all of its scores non-finite, so this detects bad inputs without reading them a second time.
  int64_t bad_query = -1, bad_row = -1;
};

// out[m, c] = sum_d queries[m, d] * corpus[ids[m, c], d]; -inf where ids[m, c] == -1. Ids are
// range-checked by the caller before this runs.
struct CandidateArgs : ScoreArgs {
  const int64_t* ids = nullptr;  // (M, C)
  int64_t C = 0;
  float* out = nullptr;  // (M, C)
  // Out: the smallest query index and the smallest corpus id whose score came out non-finite
  // (-1 when none); padding (-inf by definition) is not counted.
  int64_t bad_query = -1, bad_row = -1;
};

// out[p] = queries[qidx[p]] . corpus[rows[p]] for P (query, row) pairs sorted by row, with the
// arithmetic of search_topk (the screen's exact rescoring, screen.cpp): each row is read once for
// all the queries that kept it.
struct PairArgs : ScoreArgs {
  const int64_t* rows = nullptr;  // (P,) ascending
  const int32_t* qidx = nullptr;  // (P,)
  int64_t P = 0;
  float* out = nullptr;  // (P,)
};

void topk_generic(TopkArgs& a);
void topk_avx2(TopkArgs& a);
void topk_avx512(TopkArgs& a);
void candidates_generic(CandidateArgs& a);
void candidates_avx2(CandidateArgs& a);
void candidates_avx512(CandidateArgs& a);
void pairs_generic(PairArgs& a);
void pairs_avx2(PairArgs& a);
void pairs_avx512(PairArgs& a);

}  // namespace densescale
