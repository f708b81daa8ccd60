// Exact top-k search and candidate scoring on the CPU: the generic (portable) path, run-time ISA
// choice and the Python bindings. The launcher (python/densescale/ops/search.py) passes raw
// pointers of contiguous buffers it owns, so this file needs no libtorch; the GIL is released
// while the kernels run.
#include <cstdint>
#include <string>

#include "cpu_features.h"
#include "ops.h"
#include "search.h"
#include "search_kernel.h"

namespace py = pybind11;

namespace densescale {
namespace {

// Portable vector of 8 lanes: each lane accumulates independently, so the compiler may map it
// onto whatever SIMD the baseline has without reassociating floating-point sums.
struct VGeneric {
  struct reg {
    float v[8];
  };
  static constexpr int W = 8, MR = 4, NR = 4;
  static constexpr bool kOutlineTile = false;
  static reg zero() { return reg{}; }
  template <class T>
  static reg load(const T* p) {
    reg r;
    for (int l = 0; l < W; ++l) r.v[l] = to_float(p[l]);
    return r;
  }
  static void store(float* p, const reg& a) {
    for (int l = 0; l < W; ++l) p[l] = a.v[l];
  }
  static reg fma(const reg& a, const reg& b, reg c) {
    for (int l = 0; l < W; ++l) c.v[l] += a.v[l] * b.v[l];
    return c;
  }
  static float hsum(const reg& a) {
    float s = 0.f;
    for (int l = 0; l < W; ++l) s += a.v[l];
    return s;
  }
};

Isa pick_isa(const std::string& requested) {
  if (requested.empty() || requested == "auto") return active_isa();
  Isa want;
  if (requested == "generic") want = Isa::Generic;
  else if (requested == "avx2") want = Isa::Avx2;
  else if (requested == "avx512") want = Isa::Avx512;
  else throw py::value_error("isa must be one of 'auto', 'generic', 'avx2', 'avx512', got '" + requested + "'");
  if (static_cast<int>(want) > static_cast<int>(detect_isa()))
    throw py::value_error("isa '" + requested + "' is not supported by this CPU (it has '" +
                          isa_name(detect_isa()) + "')");
  return want;
}

CorpusType corpus_type(int code) {
  if (code < 0 || code > 2)
    throw py::value_error("corpus_type must be 0 (fp32), 1 (fp16) or 2 (bf16), got " + std::to_string(code));
  return static_cast<CorpusType>(code);
}

template <class P>
P* ptr(uintptr_t address, const char* name) {
  if (address == 0) throw py::value_error(std::string(name) + " must be a non-null buffer address");
  return reinterpret_cast<P*>(address);
}

void set_inputs(ScoreArgs& a, uintptr_t queries, int64_t M, int64_t D, uintptr_t corpus, int64_t N,
                int64_t corpus_stride, int corpus_type_code, int threads) {
  a.queries = ptr<const float>(queries, "queries");
  a.M = M;
  a.D = D;
  a.corpus = ptr<const void>(corpus, "corpus");
  a.N = N;
  a.corpus_stride = corpus_stride;
  a.corpus_type = corpus_type(corpus_type_code);
  a.threads = threads;
}

// The entry point of the chosen ISA, without the GIL.
template <class Args>
void run_on(Isa isa, Args& a, void (*avx512)(Args&), void (*avx2)(Args&), void (*generic)(Args&)) {
  py::gil_scoped_release release;
  switch (isa) {
    case Isa::Avx512: avx512(a); break;
    case Isa::Avx2: avx2(a); break;
    default: generic(a); break;
  }
}

// (bad_query, bad_row): the smallest query / corpus row (local index) that produced a non-finite
// score, -1 when none (see search_kernel.h); the launcher turns them into a clear error.
py::tuple search_topk(uintptr_t queries, int64_t M, int64_t D, uintptr_t corpus, int64_t N,
                 int64_t corpus_stride, int corpus_type_code, uintptr_t row_scale, int64_t k,
                 int64_t id_offset, uintptr_t out_scores, uintptr_t out_ids, int threads,
                 const std::string& isa) {
  if (M < 1 || D < 1 || N < 1)
    throw py::value_error("search_topk needs M, D, N >= 1, got M=" + std::to_string(M) +
                          " D=" + std::to_string(D) + " N=" + std::to_string(N));
  if (k < 1 || k > N)
    throw py::value_error("k must be in [1, N=" + std::to_string(N) + "], got " + std::to_string(k));
  if (corpus_stride < D)
    throw py::value_error("corpus_stride must be >= D=" + std::to_string(D) + ", got " +
                          std::to_string(corpus_stride));
  TopkArgs a;
  set_inputs(a, queries, M, D, corpus, N, corpus_stride, corpus_type_code, threads);
  a.row_scale = row_scale ? reinterpret_cast<const float*>(row_scale) : nullptr;
  a.k = k;
  a.id_offset = id_offset;
  a.out_scores = ptr<float>(out_scores, "out_scores");
  a.out_ids = ptr<int64_t>(out_ids, "out_ids");
  run_on(pick_isa(isa), a, topk_avx512, topk_avx2, topk_dispatch<VGeneric>);
  return py::make_tuple(a.bad_query, a.bad_row);
}

// (bad_query, bad_row) as for search_topk; bad_row is a corpus id.
py::tuple score_candidates(uintptr_t queries, int64_t M, int64_t D, uintptr_t corpus, int64_t N,
                      int64_t corpus_stride, int corpus_type_code, uintptr_t ids, int64_t C,
                      uintptr_t out, int threads, const std::string& isa) {
  if (M < 1 || D < 1 || N < 1 || C < 0)
    throw py::value_error("score_candidates needs M, D, N >= 1 and C >= 0");
  if (corpus_stride < D) throw py::value_error("corpus_stride must be >= D");
  CandidateArgs a;
  set_inputs(a, queries, M, D, corpus, N, corpus_stride, corpus_type_code, threads);
  a.C = C;
  if (C == 0) return py::make_tuple(-1, -1);
  a.ids = ptr<const int64_t>(ids, "candidate_ids");
  a.out = ptr<float>(out, "out");
  // Every id is checked before any score is written: a bad id would read outside the corpus.
  for (int64_t t = 0; t < M * C; ++t) {
    const int64_t id = a.ids[t];
    if (id < -1 || id >= N)
      throw py::value_error("candidate_ids must be in [-1, " + std::to_string(N - 1) + "], got " +
                            std::to_string(id) + " at (" + std::to_string(t / C) + ", " +
                            std::to_string(t % C) + ")");
  }
  run_on(pick_isa(isa), a, candidates_avx512, candidates_avx2, candidates_dispatch<VGeneric>);
  return py::make_tuple(a.bad_query, a.bad_row);
}

}  // namespace

// The generic path by name, for the screen's exact rescoring (screen.cpp).
void candidates_generic(CandidateArgs& a) { candidates_dispatch<VGeneric>(a); }
void pairs_generic(PairArgs& a) { pairs_dispatch<VGeneric>(a); }

void register_search(py::module_& m) {
  m.def("search_topk", &search_topk, py::arg("queries"), py::arg("M"), py::arg("D"),
        py::arg("corpus"), py::arg("N"), py::arg("corpus_stride"), py::arg("corpus_type"),
        py::arg("row_scale"), py::arg("k"), py::arg("id_offset"), py::arg("out_scores"),
        py::arg("out_ids"), py::arg("threads") = 0, py::arg("isa") = "",
        "Exact top-k by inner product over raw buffers (addresses as ints).\n"
        "queries (M, D) fp32; corpus (N, D) fp32/fp16/bf16 (corpus_type 0/1/2) with row stride\n"
        "corpus_stride; row_scale optional (N,) fp32 multiplier (0 = none); writes out_scores (M, k)\n"
        "fp32 and out_ids (M, k) int64 (+ id_offset), score descending, ties by smaller id.\n"
        "Returns (bad_query, bad_row): the smallest query and local corpus row whose scores came\n"
        "out NaN/Inf (-1, -1 when all were finite).");
  m.def("score_candidates", &score_candidates, py::arg("queries"), py::arg("M"), py::arg("D"),
        py::arg("corpus"), py::arg("N"), py::arg("corpus_stride"), py::arg("corpus_type"),
        py::arg("ids"), py::arg("C"), py::arg("out"), py::arg("threads") = 0, py::arg("isa") = "",
        "out[m, c] = queries[m] . corpus[ids[m, c]] (fp32), -inf where ids[m, c] == -1.\n"
        "ids (M, C) int64 are range-checked before any work. Returns (bad_query, bad_row): the\n"
        "smallest query and corpus id with a NaN/Inf score (-1, -1 when none).");
  m.def("detected_isa", [] { return std::string(isa_name(detect_isa())); },
        "Widest SIMD path this CPU supports (ignores DENSESCALE_ISA).");
}

}  // namespace densescale
