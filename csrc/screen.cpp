// Low-precision screening + exact rescoring (screen.h has the bound and the proof): the engine
// choice, the units and threads, the merge, the exact rescoring with the fp32 candidate kernel of
// the active ISA (the same arithmetic as search_topk, so the scores are the exact kernel's bit for
// bit), the selection, the emulated (portable) engine and the Python bindings. The corpus copy and
// the query preparation live in screen_pack.cpp, the engines in screen_amx.cpp,
// screen_avx512vnni.cpp, screen_avx512bf16.cpp, screen_avx512bw.cpp and screen_avx2.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <pybind11/stl.h>

#include "cpu_features.h"
#include "ops.h"
#include "screen.h"
#include "screen_kernel.h"
#include "screen_pack.h"
#include "search.h"
#include "search_kernel.h"

namespace py = pybind11;

namespace densescale {

#ifdef DENSESCALE_NO_AMX
void screen_unit_amx(const ScreenScan&, ScreenUnit&) {}
void screen_dump_amx(const ScreenScan&, int64_t, float*, float*) {}
#endif
#ifdef DENSESCALE_NO_AVX512BF16
void screen_unit_avx512bf16(const ScreenScan&, ScreenUnit&) {}
void screen_dump_avx512bf16(const ScreenScan&, int64_t, float*, float*) {}
#endif
#ifdef DENSESCALE_NO_AVX512VNNI
void screen_unit_avx512vnni(const ScreenScan&, ScreenUnit&) {}
void screen_dump_avx512vnni(const ScreenScan&, int64_t, float*, float*) {}
#endif

bool avx512bf16_usable() {
#if defined(__x86_64__) && !defined(DENSESCALE_NO_AVX512BF16)
  static const bool ok = [] {
    __builtin_cpu_init();
    return detect_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
#else
  return false;
#endif
}

bool avx512vnni_usable() {
#if defined(__x86_64__) && !defined(DENSESCALE_NO_AVX512VNNI)
  static const bool ok = [] {
    __builtin_cpu_init();
    return detect_isa() == Isa::Avx512 && __builtin_cpu_supports("avx512vnni");
  }();
  return ok;
#else
  return false;
#endif
}

bool amx_usable() {
  static const bool ok = [] {
#if defined(__x86_64__) && !defined(DENSESCALE_NO_AMX)
    if (detect_isa() != Isa::Avx512) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (!amx_bf16 || !amx_tile) return false;
    if (!((c = 0), __get_cpuid(1, &a, &b, &c, &d)) || !((c >> 27) & 1)) return false;  // OSXSAVE
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled by the OS
    // Linux hands the tile data state to a process only on request (ARCH_REQ_XCOMP_PERM).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

namespace {

// Portable engine: the same bf16 products with fp32 FMA accumulation, one pair at a time. Slow;
// it lets the tests run the whole screen (bound, lists, merge) on any CPU.
struct EngineEmulated {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineEmulated(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 32) {}
  void panel(int64_t m0, int mq, int64_t j0, int64_t n, float* P) const {
    for (int i = 0; i < mq; ++i) {
      const uint16_t* q = s.qpack + (m0 + i) * s.Dp;
      for (int64_t r = 0; r < n; ++r) {
        float acc = 0.f;
        for (int64_t d = 0; d < s.Dp; ++d)
          acc = std::fma(bf16_to_float(q[d]), bf16_to_float(s.cpack[packed_index(j0 + r, d, nkc)]),
                         acc);
        P[i * n + r] = acc;
      }
    }
  }
};

// The same for the int8 copy: exact integer products and sums, as VPDPBUSD.
struct EngineEmulatedInt8 {
  const ScreenScan& s;
  int64_t nkc;
  explicit EngineEmulatedInt8(const ScreenScan& scan) : s(scan), nkc(scan.Dp / 64) {}
  void panel(int64_t m0, int mq, int64_t j0, int64_t n, float* P) const {
    for (int i = 0; i < mq; ++i) {
      for (int64_t r = 0; r < n; ++r) {
        int32_t acc = 0;
        for (int64_t d = 0; d < s.Dp; ++d)
          acc += static_cast<int32_t>(s.c8[packed_index8(j0 + r, d, nkc)]) *
                 s.q8[query_index8(m0 + i, d, s.Dp)];
        P[i * n + r] = static_cast<float>(acc - s.qcorr[m0 + i]);
      }
    }
  }
};

// Pages mapped for one call or kept by a thread (Linux: an anonymous mapping, whose pages become
// resident when first written and go back to the OS when it is unmapped; malloc would keep freed
// blocks of this size in its arenas). Uninitialised, like new T[n].
template <class T>
struct PageBuf {
  T* p = nullptr;
  size_t bytes = 0;
  void allocate(int64_t n) {
    release();
    bytes = static_cast<size_t>(n) * sizeof(T);
#ifdef __linux__
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    p = static_cast<T*>(m);
#else
    p = new T[n];
#endif
  }
  void release() {
#ifdef __linux__
    if (p) munmap(p, bytes);
#else
    delete[] p;
#endif
    p = nullptr;
    bytes = 0;
  }
  PageBuf() = default;
  PageBuf(const PageBuf&) = delete;
  PageBuf& operator=(const PageBuf&) = delete;
  ~PageBuf() { release(); }
};

// A thread's candidate lists (U, L, id; mb x cap entries): a query touches only the slots it
// fills, so a large cap (the candidate limit) costs address space, not a memset. Up to
// kKeepEntries (48 MiB of address space; cap <= 8,192 at 512 queries per block) one set per
// thread is kept across calls, which saves the next call the first-touch page faults of the
// slots it fills (~15% of a 1,000-query AMX search over 50k x 384). A set whose call wrote more
// than kKeepTouched bytes (long lists: int8 screens, large k) is unmapped at the end of the
// call, so at most that much stays resident per thread between searches; a request beyond
// kKeepEntries gets a set of its own for that call.
struct ListBuffers {
  static constexpr int64_t kKeepEntries = int64_t{4} << 20;
  static constexpr int64_t kKeepTouched = int64_t{8} << 20;
  PageBuf<float> u, l;
  PageBuf<int32_t> id;
  int64_t size = 0;
  ListBuffers& reserve(int64_t entries) {
    if (size < entries) {
      u.allocate(entries);
      l.allocate(entries);
      id.allocate(entries);
      size = entries;
    }
    return *this;
  }
  void release() {
    u.release();
    l.release();
    id.release();
    size = 0;
  }
  static ListBuffers& kept_set() {
    static thread_local ListBuffers b;
    return b;
  }
  static ListBuffers& kept() { return kept_set().reserve(kKeepEntries); }
};

struct GreaterF {
  bool operator()(float a, float b) const { return a > b; }
};

// The scan's inputs: the prepared queries and the corpus copy (k and bound_scale set by the caller).
ScreenScan scan_of(const Prepared& p, int64_t Dp, uintptr_t cpack, uintptr_t meta, int64_t Np,
                   int64_t N) {
  ScreenScan s;
  s.qpack = p.qpack.data();
  s.q8 = p.q8.data();
  s.qcorr = p.qcorr.data();
  s.Dp = Dp;
  s.qA = p.qA.data();
  s.qB = p.qB.data();
  s.cpack = reinterpret_cast<const uint16_t*>(cpack);
  s.c8 = reinterpret_cast<const uint8_t*>(cpack);
  s.meta = reinterpret_cast<const float*>(meta);
  s.Np = Np;
  s.N = N;
  return s;
}

void select_topk(std::vector<Cand>& c, int64_t k, float* os, int64_t* oi, int64_t id_offset) {
  const int64_t n = cut_to_k(c.data(), static_cast<int64_t>(c.size()), k);
  std::sort(c.begin(), c.begin() + n, better);
  for (int64_t r = 0; r < n; ++r) {
    os[r] = c[r].s;
    oi[r] = c[r].id + id_offset;
  }
  for (int64_t r = n; r < k; ++r) {
    os[r] = -std::numeric_limits<float>::infinity();
    oi[r] = -1;
  }
}

void rescore(PairArgs& a) {
  switch (active_isa()) {
    case Isa::Avx512: pairs_avx512(a); break;
    case Isa::Avx2: pairs_avx2(a); break;
    default: pairs_generic(a); break;
  }
}

// The hardware engines this process runs (its ISA as capped by DENSESCALE_ISA), best first: AMX
// (bf16 tiles), then AVX512-VNNI (int8, 4x the fp32 FMA's multiplies per instruction), then
// AVX512-BF16 (2x, at half the issue rate on this project's Xeon; a tighter bound), then int8
// through VPMADDUBSW on AVX-512 (1.34x a 512-bit FMA) and on AVX2 (1.8x a 256-bit FMA).
std::vector<std::string> usable_engines() {
  std::vector<std::string> e;
  const Isa isa = active_isa();
  if (isa == Isa::Avx512) {
    if (amx_usable()) e.push_back("amx");
    if (avx512vnni_usable()) e.push_back("avx512vnni");
    if (avx512bf16_usable()) e.push_back("avx512bf16");
    e.push_back("avx512bw");
  }
  if (isa >= Isa::Avx2) e.push_back("avx2");
  return e;
}

// The engine a search uses unless one is pinned: the best usable one ("none" on generic code).
// Every AVX-512 CPU has AVX512-BW, so the AVX2 engine is the default only where AVX2 is the
// widest ISA.
std::string default_engine() {
  const std::vector<std::string> e = usable_engines();
  return e.empty() ? std::string("none") : e.front();
}

struct EngineFns {
  void (*unit)(const ScreenScan&, ScreenUnit&);
  void (*dump)(const ScreenScan&, int64_t, float*, float*);
  QueryCode code;  // bf16: reads the bf16 copy; else the int8 copy
  bool int8() const { return code != QueryCode::Bf16; }
};

EngineFns pick_engine(const std::string& engine) {
  if (engine == "emulated") return {screen_unit_emulated, screen_dump_emulated, QueryCode::Bf16};
  if (engine == "emulated-int8")
    return {screen_unit_emulated_int8, screen_dump_emulated_int8, QueryCode::Int8};
  const bool amx = engine == "amx", bf16 = engine == "avx512bf16", vnni = engine == "avx512vnni",
             bw = engine == "avx512bw", avx2 = engine == "avx2";
  if (!amx && !bf16 && !vnni && !bw && !avx2)
    throw py::value_error(
        "engine must be 'amx', 'avx512vnni', 'avx512bf16', 'avx512bw', 'avx2', 'emulated' or "
        "'emulated-int8', got '" + engine + "'");
  if ((amx && !amx_usable()) || (bf16 && !avx512bf16_usable()) ||
      (vnni && !avx512vnni_usable()) || (bw && active_isa() < Isa::Avx512) ||
      (avx2 && active_isa() < Isa::Avx2))
    throw py::value_error("engine '" + engine + "' is not usable on this CPU");
  if (amx) return {screen_unit_amx, screen_dump_amx, QueryCode::Bf16};
  if (vnni) return {screen_unit_avx512vnni, screen_dump_avx512vnni, QueryCode::Int8};
  if (bw) return {screen_unit_avx512bw, screen_dump_avx512bw, QueryCode::Int8Pairs};
  if (avx2) return {screen_unit_avx2, screen_dump_avx2, QueryCode::Int8Pairs};
  return {screen_unit_avx512bf16, screen_dump_avx512bf16, QueryCode::Bf16};
}

py::tuple search_topk_screened(uintptr_t queries, int64_t M, int64_t D, uintptr_t cpack,
                               uintptr_t meta, int64_t Np, int64_t Dp, uintptr_t corpus, int64_t N,
                               int64_t corpus_stride, int ctype, uintptr_t row_scale, int64_t k,
                               int64_t id_offset, uintptr_t out_scores, uintptr_t out_ids,
                               uintptr_t fallback, int threads, const std::string& engine,
                               double bound_scale, int64_t cand_limit) {
  const EngineFns fns = pick_engine(engine);
  if (M < 1 || D < 1 || N < 1 || k < 1 || k > N || Np < N || Np % 32 || Dp < D ||
      Dp % (fns.int8() ? 64 : 32) || (fns.int8() && Dp > 65536) || corpus_stride < D ||
      cand_limit < k || N >= (int64_t{1} << 31))
    throw py::value_error("search_topk_screened: inconsistent sizes");
  if (ctype < 0 || ctype > 2) throw py::value_error("corpus_type must be 0, 1 or 2");
  const float* q = reinterpret_cast<const float*>(queries);
  const float* rs = row_scale ? reinterpret_cast<const float*>(row_scale) : nullptr;
  auto* os = reinterpret_cast<float*>(out_scores);
  auto* oi = reinterpret_cast<int64_t*>(out_ids);
  auto* fb = reinterpret_cast<uint8_t*>(fallback);
  int64_t bad_query = -1, bad_row = -1, total = 0;
  {
    py::gil_scoped_release release;
    const int T_ = resolve_threads(threads);
    Prepared p = prep_queries(q, M, D, Dp, T_, fns.code);
    ScreenScan s = scan_of(p, Dp, cpack, meta, Np, N);
    s.k = k;
    s.bound_scale = static_cast<float>(bound_scale);

    // Units: query blocks of <= 512 (the bf16 block stays in L2) x corpus shards (32-row aligned)
    // so that there are >= 4 units per thread (balance when other jobs share the cores). Every
    // parallel region is a barrier a descheduled thread can hold up, so the small steps below run
    // on one thread for small batches.
    const int64_t Mp = (M + 31) / 32 * 32;
    const int64_t n_qb = (Mp + 511) / 512;
    const int64_t mb = (Mp / 32 + n_qb - 1) / n_qb * 32;
    int64_t shards = std::max<int64_t>(1, (4 * T_ + n_qb - 1) / n_qb);
    shards = std::max<int64_t>(1, std::min<int64_t>(shards, Np / 2048));
    const int64_t units = n_qb * shards;
    const int64_t cap = std::max<int64_t>(2 * k, cand_limit) + kPanelRows + 64;
    struct Result {
      std::vector<float> u, l;
      std::vector<int32_t> id;
      std::vector<int64_t> start;  // (mq + 1) offsets
      std::vector<uint8_t> skip;
    };
    std::vector<Result> res(units);
    // A shard that starts after another shard of its query block prunes with that one's threshold.
    // Units go shard-major (the first shard of every query block, then the second...), so the
    // threads start on different blocks where there are several and most shards start from a
    // finished shard's threshold: on MedQuAD (1,000 x 50k x 384) the rows pushed fell from 2,412
    // to 1,557 per query and the search from 47 to 44 ms (AMX; random 200k x 768: 216 -> 201 ms).
    std::unique_ptr<std::atomic<float>[]> shared_thr(new std::atomic<float>[Mp]);
    for (int64_t i = 0; i < Mp; ++i) shared_thr[i] = -std::numeric_limits<float>::infinity();
#pragma omp parallel num_threads(T_)
    {
      ListBuffers own;
      ListBuffers& lists =
          mb * cap <= ListBuffers::kKeepEntries ? ListBuffers::kept() : own.reserve(mb * cap);
      float* wu = lists.u.p;
      float* wl = lists.l.p;
      int32_t* wid = lists.id.p;
      std::vector<float> thr;
      std::vector<int64_t> count;
      std::vector<int64_t> slot_used(mb, 0);
#pragma omp for schedule(dynamic, 1)
      for (int64_t un = 0; un < units; ++un) {
        const int64_t qb = un % n_qb, sh = un / n_qb;
        ScreenUnit u;
        u.m0 = qb * mb;
        u.mq = std::min(mb, Mp - u.m0);
        u.j0 = Np / 32 * sh / shards * 32;
        u.j1 = Np / 32 * (sh + 1) / shards * 32;
        u.cap = cap;
        count.assign(u.mq, 0);
        thr.resize(u.mq);
        Result& r = res[qb * shards + sh];
        r.skip.assign(p.skip.begin() + u.m0, p.skip.begin() + u.m0 + u.mq);
        u.u = wu;
        u.l = wl;
        u.id = wid;
        u.count = count.data();
        u.skip = r.skip.data();
        u.thr = thr.data();
        u.shared_thr = shared_thr.get() + u.m0;
        u.slot_used = slot_used.data();
        fns.unit(s, u);
        r.start.assign(u.mq + 1, 0);
        for (int64_t i = 0; i < u.mq; ++i) r.start[i + 1] = r.start[i] + (r.skip[i] ? 0 : count[i]);
        r.u.resize(r.start[u.mq]);
        r.l.resize(r.start[u.mq]);
        r.id.resize(r.start[u.mq]);
        for (int64_t i = 0; i < u.mq; ++i) {
          const int64_t o = r.start[i], n = r.start[i + 1] - o;
          std::copy(wu + i * cap, wu + i * cap + n, r.u.data() + o);
          std::copy(wl + i * cap, wl + i * cap + n, r.l.data() + o);
          std::copy(wid + i * cap, wid + i * cap + n, r.id.data() + o);
        }
      }
      int64_t touched = 0;  // list entries this thread wrote: the pages it made resident
      for (int64_t e : slot_used) touched += e;
      if (&lists != &own && touched * 12 > ListBuffers::kKeepTouched) lists.release();
    }
    // Merge: t = the k-th largest L over the shards; candidates U >= t, ascending ids.
    std::vector<std::vector<int32_t>> cands(M);
#pragma omp parallel num_threads(T_) if (M >= 64) reduction(+ : total)
    {
      std::vector<float> ls;
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m) {
        const int64_t qb = m / mb, i = m - qb * mb;
        bool skip = false;
        ls.clear();
        for (int64_t sh = 0; sh < shards; ++sh) {
          const Result& r = res[qb * shards + sh];
          skip |= r.skip[i] != 0;
          ls.insert(ls.end(), r.l.begin() + r.start[i], r.l.begin() + r.start[i + 1]);
        }
        fb[m] = 1;
        if (skip || static_cast<int64_t>(ls.size()) < k) continue;
        std::nth_element(ls.begin(), ls.begin() + (k - 1), ls.end(), GreaterF());
        const float t = ls[k - 1];
        std::vector<int32_t>& c = cands[m];
        for (int64_t sh = 0; sh < shards; ++sh) {
          const Result& r = res[qb * shards + sh];
          for (int64_t e = r.start[i]; e < r.start[i + 1]; ++e)
            if (r.u[e] >= t) c.push_back(r.id[e]);
        }
        if (static_cast<int64_t>(c.size()) > cand_limit) {
          c.clear();
          continue;
        }
        fb[m] = 0;
        total += c.size();
      }
    }
    res.clear();
    // Exact rescoring: (query, row) pairs in row order (a counting sort), each row read once
    // for all the queries that kept it, with the arithmetic of the active ISA's search_topk.
    std::vector<int64_t> first(N + 1, 0);
    for (int64_t m = 0; m < M; ++m)
      for (int32_t j : cands[m]) ++first[j + 1];
    for (int64_t j = 0; j < N; ++j) first[j + 1] += first[j];
    const int64_t P = first[N];
    std::vector<int64_t> rows(P), slot(P);
    std::vector<int32_t> qidx(P);
    std::vector<int64_t> base(M + 1, 0);
    for (int64_t m = 0; m < M; ++m) base[m + 1] = base[m] + static_cast<int64_t>(cands[m].size());
    {
      std::vector<int64_t> fill(first.begin(), first.end() - 1);
      for (int64_t m = 0; m < M; ++m)
        for (size_t e = 0; e < cands[m].size(); ++e) {
          const int64_t j = cands[m][e], at = fill[j]++;
          rows[at] = j;
          qidx[at] = static_cast<int32_t>(m);
          slot[at] = base[m] + static_cast<int64_t>(e);
        }
    }
    std::vector<float> pair_scores(P), sc(P);
    if (P > 0) {
      PairArgs a;
      a.queries = q;
      a.M = M;
      a.D = D;
      a.corpus = reinterpret_cast<const void*>(corpus);
      a.N = N;
      a.corpus_stride = corpus_stride;
      a.corpus_type = static_cast<CorpusType>(ctype);
      a.rows = rows.data();
      a.qidx = qidx.data();
      a.P = P;
      a.out = pair_scores.data();
      a.threads = P >= 8192 ? T_ : 1;  // a small batch: not worth waking the other threads
      rescore(a);
      for (int64_t p = 0; p < P; ++p) sc[slot[p]] = pair_scores[p];
    }
    NonFinite bad;
#pragma omp parallel num_threads(T_) if (M >= 64)
    {
      std::vector<Cand> c;
      NonFinite mine;
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m) {
        if (fb[m]) continue;
        c.clear();
        for (size_t e = 0; e < cands[m].size(); ++e) {
          const int64_t j = cands[m][e];
          float v = sc[base[m] + static_cast<int64_t>(e)];
          if (rs) v *= rs[j];  // as search_topk: the score times the row's scale
          if (!is_finite(v)) mine.note(m, j);
          c.push_back(Cand{v, j});
        }
        select_topk(c, k, os + m * k, oi + m * k, id_offset);
      }
#pragma omp critical
      if (mine.query >= 0) bad.note(mine.query, mine.row);
    }
    bad_query = bad.query;
    bad_row = bad.row;
  }
  int64_t n_fb = 0;
  for (int64_t m = 0; m < M; ++m) n_fb += fb[m];
  return py::make_tuple(bad_query, bad_row, total, n_fb);
}

// S and E of every pair in the original units of the scores (query units / tau), (M, N) each.
void screen_bounds(uintptr_t queries, int64_t M, int64_t D, uintptr_t cpack, uintptr_t meta,
                   int64_t Np, int64_t Dp, int64_t N, const std::string& engine, uintptr_t S,
                   uintptr_t E) {
  const EngineFns fns = pick_engine(engine);
  if (Dp % (fns.int8() ? 64 : 32) || Dp < D)
    throw py::value_error("screen_bounds: inconsistent sizes");
  const float* q = reinterpret_cast<const float*>(queries);
  Prepared p = prep_queries(q, M, D, Dp, 1, fns.code);
  ScreenScan s = scan_of(p, Dp, cpack, meta, Np, N);
  auto* Sp = reinterpret_cast<float*>(S);
  auto* Ep = reinterpret_cast<float*>(E);
  fns.dump(s, M, Sp, Ep);
  for (int64_t m = 0; m < M; ++m) {  // back to the scores' units
    const double tau = p.tau[m];
    for (int64_t j = 0; j < N; ++j) {
      Sp[m * N + j] = static_cast<float>(Sp[m * N + j] / tau);
      Ep[m * N + j] = static_cast<float>(Ep[m * N + j] / tau);
    }
  }
}

// The same list compaction through the scalar epilogue or the AVX-512 one: (new threshold,
// kept count); u, l, id are compacted in place and need 16 spare slots past n.
py::tuple screen_compact(uintptr_t u, uintptr_t l, uintptr_t id, int64_t n, int64_t k, double t,
                         const std::string& epilogue) {
  if (n < 0 || k < 1) throw py::value_error("screen_compact: n must be >= 0 and k >= 1");
  auto* up = reinterpret_cast<float*>(u);
  auto* lp = reinterpret_cast<float*>(l);
  auto* ip = reinterpret_cast<int32_t*>(id);
  float th = static_cast<float>(t);
  int64_t kept;
  if (epilogue == "scalar") {
    std::vector<float> scratch(EpiScalar::select_scratch(n) + 1);
    kept = compact_list<EpiScalar>(up, lp, ip, n, k, th, scratch.data());
  } else if (epilogue == "avx512") {
    if (active_isa() < Isa::Avx512) throw py::value_error("the avx512 epilogue needs AVX-512");
    kept = screen_compact_avx512(up, lp, ip, n, k, th);
  } else {
    throw py::value_error("epilogue must be 'scalar' or 'avx512', got '" + epilogue + "'");
  }
  return py::make_tuple(th, kept);
}

}  // namespace

void screen_unit_emulated(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineEmulated, EpiScalar>(s, u);
}
void screen_dump_emulated(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineEmulated>(s, M, S, E);
}
void screen_unit_emulated_int8(const ScreenScan& s, ScreenUnit& u) {
  screen_unit_impl<EngineEmulatedInt8, EpiScalar>(s, u);
}
void screen_dump_emulated_int8(const ScreenScan& s, int64_t M, float* S, float* E) {
  screen_dump_impl<EngineEmulatedInt8>(s, M, S, E);
}

void register_screen(py::module_& m) {
  m.def("screen_engine", &default_engine,
        "Low-precision screen this process runs by default: 'amx' (AMX-BF16 granted by the OS),\n"
        "'avx512vnni' (int8, AVX512-VNNI without AMX), 'avx512bw' (int8 through VPMADDUBSW, on\n"
        "AVX-512 without VNNI), 'avx2' (the same where AVX2 is the widest ISA, or under\n"
        "DENSESCALE_ISA=avx2) or 'none' (generic code).");
  m.def("screen_engines", &usable_engines,
        "Every hardware screen engine this process runs, best first (a subset of\n"
        "['amx', 'avx512vnni', 'avx512bf16', 'avx512bw', 'avx2']).");
  m.def("screen_format", [](const std::string& engine) {
          return std::string(pick_engine(engine).int8() ? "int8" : "bf16");
        }, py::arg("engine"),
        "The corpus copy an engine reads: 'bf16' (amx, avx512bf16, emulated; Dp a multiple of\n"
        "32) or 'int8' (avx512vnni, avx512bw, avx2, emulated-int8; Dp a multiple of 64).");
  m.def("screen_pack", &screen_pack, py::arg("corpus"), py::arg("N"), py::arg("D"),
        py::arg("corpus_stride"), py::arg("corpus_type"), py::arg("row_scale"), py::arg("cpack"),
        py::arg("meta"), py::arg("Np"), py::arg("Dp"), py::arg("threads") = 0,
        py::arg("format") = "bf16",
        "Screening copy of a corpus: cpack (bf16: Np * Dp uint16, AMX tiles; int8: Np * Dp bytes,\n"
        "VPDPBUSD groups), meta (4, Np) fp32 bound factors (csrc/screen.h). False when a row is\n"
        "NaN/Inf or its norm lies outside [2^-40, 2^40] (that corpus is searched by the exact\n"
        "kernel).");
  m.def("search_topk_screened", &search_topk_screened, py::arg("queries"), py::arg("M"),
        py::arg("D"), py::arg("cpack"), py::arg("meta"), py::arg("Np"), py::arg("Dp"),
        py::arg("corpus"), py::arg("N"), py::arg("corpus_stride"), py::arg("corpus_type"),
        py::arg("row_scale"), py::arg("k"), py::arg("id_offset"), py::arg("out_scores"),
        py::arg("out_ids"), py::arg("fallback"), py::arg("threads") = 0,
        py::arg("engine") = "amx", py::arg("bound_scale") = 1.0, py::arg("cand_limit") = 4096,
        "search_topk's result through the bf16 screen + exact fp32 rescoring. Queries whose\n"
        "candidates exceed cand_limit (or that are zero / out of range) get fallback[m] = 1 and no\n"
        "result: the caller runs search_topk for them. Returns (bad_query, bad_row, candidates,\n"
        "fallbacks).");
  m.def("screen_bounds", &screen_bounds, py::arg("queries"), py::arg("M"), py::arg("D"),
        py::arg("cpack"), py::arg("meta"), py::arg("Np"), py::arg("Dp"), py::arg("N"),
        py::arg("engine"), py::arg("S"), py::arg("E"),
        "Test hook: the screen's score S and bound E of every (query, row) pair, (M, N) each.");
  m.def("screen_compact", &screen_compact, py::arg("u"), py::arg("l"), py::arg("id"),
        py::arg("n"), py::arg("k"), py::arg("t"), py::arg("epilogue"),
        "Test hook: one candidate list (fp32 u, l, int32 id; n rows + 16 spare slots) compacted in\n"
        "place by the 'scalar' or 'avx512' epilogue. Returns (threshold, kept): the threshold is\n"
        "the k-th largest l >= t (t if fewer than k), kept the rows with u >= it, in order.");
}

}  // namespace densescale
