"""Low-precision screening (csrc/screen.h): the screened search returns exactly what the exact fp32
kernel returns (ids and scores bit for bit), the bound holds for every (query, row) pair, and a
shrunk bound is caught. The portable "emulated" (bf16) and "emulated-int8" engines run everywhere;
"amx", "avx512vnni", "avx512bf16", "avx512bw" and "avx2" where the CPU has them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _search_ref import (
    assert_topk_matches,
    exact_kernel,
    reference_scores,
    run_with_isa,
    tolerance,
)

import densescale
from densescale._native import native
from densescale.index import FlatIndex
from densescale.ops import _search_screen as SC
from densescale.ops import search as S

ENGINES = ["emulated", "emulated-int8", *native().screen_engines()]
HARDWARE = native().screen_engines()
DEFAULT = native().screen_engine()  # "none" on AVX-512 CPUs with neither AMX, VNNI nor BF16


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """Screen every shard (no size / k / candidate limits) with the given engine."""
    monkeypatch.setitem(S._SCREEN, "engine", request.param)
    monkeypatch.setitem(S._SCREEN, "min_rows", 0)
    monkeypatch.setitem(S._SCREEN, "max_k_frac", 1.0)
    monkeypatch.setitem(S._SCREEN, "int8_max_k", 1 << 30)
    monkeypatch.setitem(S._SCREEN, "cand_frac", 1.0)
    monkeypatch.setitem(S._SCREEN, "pack_min_queries", 0)
    monkeypatch.setattr(SC, "_screen_cache", {})
    return request.param


def check(q, c, k, metric="ip", screened=True):
    """Screened public search == exact kernel (bit for bit) and == the fp64 reference (ties)."""
    s, i = densescale.search(q, c, k, metric=metric, backend="cpp", threads=2)
    stats = dict(S.screen_stats)
    if screened:
        shards = len(c) if isinstance(c, list) else 1
        assert stats["queries"] + stats["fallbacks"] == q.shape[0] * shards  # counted per shard
    es, ei = exact_kernel(q, c, k, metric)
    S.screen_stats.update(stats)  # what the screened call did (exact_kernel() resets the counters)
    assert torch.equal(i, ei), (i, ei)
    assert torch.equal(s, es)
    whole = torch.cat([p.float() for p in c]) if isinstance(c, list) else c.float()
    ref = reference_scores(q, whole, metric)
    scale = float(ref.abs().max()) / max(1.0, q.shape[1] ** 0.5) or 1.0
    assert_topk_matches(s, i, ref, k, tolerance(q.shape[1], torch.float32, scale))
    return s, i


# ---- exactness on random and adversarial inputs ----


@pytest.mark.parametrize(
    "M,N,D,k",
    [
        (1, 300, 37, 1),
        (1, 5000, 64, 10),
        (5, 257, 64, 257),
        (33, 1000, 100, 10),
        (70, 2000, 40, 50),
        # 8 corpus shards that share their thresholds, lists compacted many times per shard
        (3, 20000, 48, 700),
    ],
)
def test_random_inputs_equal_the_exact_kernel(engine, M, N, D, k):
    g = torch.Generator().manual_seed(M * 1000 + N)
    check(torch.randn(M, D, generator=g), torch.randn(N, D, generator=g), k)
    assert S.screen_stats["queries"] == M


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_corpora(engine, dtype):
    g = torch.Generator().manual_seed(1)
    q, c = torch.randn(9, 48, generator=g), torch.randn(1500, 48, generator=g).to(dtype)
    check(q, c, 20)
    check(q.to(dtype), c, 20)  # half queries are widened to fp32 first


def test_cosine(engine):
    g = torch.Generator().manual_seed(2)
    c = torch.randn(1200, 40, generator=g) * torch.logspace(-3, 3, 1200)[:, None]
    check(torch.randn(7, 40, generator=g), c, 15, metric="cos")


def test_exact_ties_and_duplicates(engine):
    # Many identical rows and rows that differ only below bf16 precision: equal bf16 copies,
    # different fp32 scores; ties go to the smaller id.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(64, generator=g)
    c = base.repeat(3000, 1)
    c[1000:2000, 0] += torch.arange(1000) * 2.0**-20  # below bf16's resolution
    c[2000:] = torch.randn(1000, 64, generator=g)
    q = torch.stack([base, torch.ones(64), torch.randn(64, generator=g)])
    for k in (1, 7, 150, 1001):
        check(q, c, k)


def _crossing_rows(D=64, n_decoys=2000, seed=0):
    """k = 1 with the best row b underestimated by bf16 rounding and decoys overestimated, so the
    bf16 order is reversed while the exact scores are within ~2D 2^-16 of each other. With
    q = ones, the Cauchy-Schwarz step is tight for b: a bound even half as large drops b."""
    hi = 1 + 2.0**-8 + 2.0**-16  # just above a bf16 midpoint: rounds up
    lo = 1 + 2.0**-8 - 2.0**-16  # just below: rounds down
    c = torch.full((n_decoys + 1, D), hi, dtype=torch.float32)
    c[:, 0] = hi - 4 * D * 2.0**-16  # decoys: exact total below b's, bf16 total above
    b = int(torch.randint(0, n_decoys + 1, (1,), generator=torch.Generator().manual_seed(seed)))
    c[b] = lo
    return torch.ones(1, D), c, b


def _crossing_rows_int8(D=64, n_decoys=2000, seed=0):
    """The same for the int8 copy: q = ones (q~ exact), every row's largest entry ~127 so its
    scale is ~1. b's other entries lie just below a rounding midpoint (63.5 - 2^-9: rounded down
    to 63), the decoys' just above (63.5 + 2^-9: up to 64) with their first entry lowered so that
    their exact total is 1/8 below b's: int8 reverses the order by ~D / 2, and the bound, tight
    for b (its residual is parallel to q but for one entry), is what keeps b."""
    d = 2.0**-9
    c = torch.full((n_decoys + 1, D), 63.5 + d, dtype=torch.float32)
    c[:, 0] = 127 - (D - 1) * 2 * d - 0.125
    b = int(torch.randint(0, n_decoys + 1, (1,), generator=torch.Generator().manual_seed(seed)))
    c[b] = 63.5 - d
    c[b, 0] = 127
    return torch.ones(1, D), c, b


def test_rows_crossing_the_kth_boundary(engine, monkeypatch):
    q, c, b = _crossing_rows_int8() if _format(engine) == "int8" else _crossing_rows()
    _, i = check(q, c, 1)
    assert int(i[0, 0]) == b
    # The same search with the bound halved misses b: the exactness checks above have teeth.
    monkeypatch.setitem(S._SCREEN, "bound_scale", 0.5)
    _, i_bad = densescale.search(q, c, 1, backend="cpp", threads=2)
    assert int(i_bad[0, 0]) != b


def test_huge_and_tiny_norms(engine):
    g = torch.Generator().manual_seed(4)
    c = torch.randn(2000, 32, generator=g) * (2.0 ** torch.randint(-35, 36, (2000, 1), generator=g))
    q = torch.randn(4, 32, generator=g) * torch.tensor([[1e-9], [1.0], [1e9], [3e-5]])
    check(q, c, 25)
    check(q, c, 25, metric="cos")


def test_out_of_range_norms_and_zero_vectors_use_the_exact_kernel(engine):
    g = torch.Generator().manual_seed(5)
    c = torch.randn(500, 16, generator=g)
    c[7] = 0.0
    q = torch.randn(3, 16, generator=g)
    q[1] = 0.0  # a zero query ties every row: it goes to the exact kernel
    check(q, c, 9)
    assert S.screen_stats["fallbacks"] == 1
    c[3] *= 1e-20  # a row the screen does not take: the whole shard runs the exact kernel
    with pytest.warns(RuntimeWarning, match=r"corpus row 3 has norm 4.\d+e-20, outside") as seen:
        check(q, c, 9, screened=False)
    assert seen[0].filename == __file__  # it points at the caller's search line
    assert S.screen_stats["queries"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per copy: the next search is silent
        check(q, c, 9, screened=False)
    # in a list of shards the row is named by its global id
    with pytest.warns(RuntimeWarning, match=r"corpus row 503 has norm"):
        check(q, [torch.randn(500, 16, generator=g), c.clone()], 9, screened=False)


def test_candidate_limit_falls_back_per_query(engine, monkeypatch):
    # Identical rows: every row is a candidate; a limit below N sends the query to the exact kernel.
    c = torch.ones(800, 16)
    q = torch.cat([torch.ones(1, 16), torch.randn(2, 16)])
    monkeypatch.setitem(S._SCREEN, "cand_frac", 0.1)
    monkeypatch.setitem(S._SCREEN, "min_cand_limit", 0)
    check(q, c, 5)
    assert S.screen_stats["fallbacks"] >= 1
    # The floor of min_cand_limit rows (here above N): rescoring all 800 beats a fallback.
    monkeypatch.setitem(S._SCREEN, "min_cand_limit", 4096)
    check(q, c, 5)
    assert S.screen_stats["fallbacks"] == 0 and S.screen_stats["queries"] == 3


def test_nan_corpus_row_is_still_named(engine):
    c = torch.randn(400, 16)
    c[123, 4] = float("nan")
    with pytest.raises(ValueError, match="corpus row 123 holds NaN or Inf"):
        densescale.search(torch.randn(2, 16), c, 3, backend="cpp")
    q = torch.randn(2, 16)
    q[1, 0] = float("inf")
    with pytest.raises(ValueError, match="queries row 1 holds NaN or Inf"):
        densescale.search(q, torch.randn(400, 16), 3, backend="cpp")


def test_shards_and_flat_index_cache(engine, monkeypatch, tmp_path):
    g = torch.Generator().manual_seed(6)
    parts = [torch.randn(n, 24, generator=g) for n in (700, 5, 900)]
    q = torch.randn(6, 24, generator=g)
    check(q, parts, 30)
    made = []
    real = SC._make_screen_copy
    monkeypatch.setattr(SC, "_make_screen_copy", lambda *a: made.append(1) or real(*a))
    index = FlatIndex(24)
    index.add(torch.cat(parts))
    s1, i1 = index.search(q, 30)
    s2, i2 = index.search(q, 30)
    assert len(made) == 1  # the copy is made once per stored shard
    assert torch.equal(i1, i2) and torch.equal(s1, s2)
    es, ei = exact_kernel(q, torch.cat(parts), 30)
    assert torch.equal(i1, ei) and torch.equal(s1, es)
    index.add(torch.randn(50, 24, generator=g))  # a new shard tensor: a new copy
    index.search(q, 30)
    assert len(made) == 2
    c = torch.randn(600, 24, generator=g)
    densescale.search(q, c, 5, backend="cpp")
    c.mul_(-1)  # in-place change bumps the version: the stale copy is not used
    check(q, c, 5)
    index.save(tmp_path / "ix")
    loaded = FlatIndex.load(tmp_path / "ix")
    _, i3 = loaded.search(q, 30)
    assert torch.equal(i3[:, :5], index.search(q, 30)[1][:, :5])


def test_property_random_and_adversarial(engine):
    """Many small random cases, some built for near-ties, against the exact kernel and fp64."""
    rng = np.random.default_rng(7)
    for case in range(12 if engine.startswith("emulated") else 40):
        M, N, D = int(rng.integers(1, 40)), int(rng.integers(1, 600)), int(rng.integers(1, 80))
        k = int(rng.integers(1, N + 1))
        kind = case % 4
        c = rng.standard_normal((N, D)).astype(np.float32)
        q = rng.standard_normal((M, D)).astype(np.float32)
        if kind == 1:  # few distinct rows, tiny perturbations below bf16 precision
            c = c[rng.integers(0, max(1, N // 8), N)] * (1 + 2.0**-12 * rng.integers(0, 3, (N, 1)))
        elif kind == 2:  # rows at bf16 midpoints (maximal rounding error)
            c = np.sign(c) * (1 + 2.0**-8 + 2.0**-16 * rng.integers(-3, 4, (N, D)))
            q = np.sign(q) * 1.0
        elif kind == 3:  # wild norms
            c = c * 2.0 ** rng.integers(-30, 31, (N, 1))
            q = q * 2.0 ** rng.integers(-30, 31, (M, 1))
        c, q = torch.from_numpy(c.astype(np.float32)), torch.from_numpy(q.astype(np.float32))
        check(q, c, k, metric="cos" if case % 5 == 4 else "ip")


# ---- the bound itself ----


def _bounds(q, c, engine, metric="ip"):
    """(S, E) of every pair from the screen, and the exact kernel's fp32 scores (M, N)."""
    C = native()
    cf = c.float().contiguous()
    cos = metric == "cos"
    qf = (S._normalize(q) if cos else q.float()).contiguous()
    copy = S._make_screen_copy(cf, None, cos, 2, C.screen_format(engine))
    assert copy.ok
    M, N = qf.shape[0], cf.shape[0]
    Sm, Em = torch.empty(M, N), torch.empty(M, N)
    C.screen_bounds(qf.data_ptr(), M, qf.shape[1], copy.cpack.data_ptr(), copy.meta.data_ptr(),
                    copy.Np, copy.Dp, N, engine, Sm.data_ptr(), Em.data_ptr())  # fmt: skip
    ids = torch.arange(N).repeat(M, 1)
    s32 = densescale.score_candidates(qf, cf, ids)
    if cos:
        s32 = s32 * copy.scale[None, :]
    return Sm.double(), Em.double(), s32.double()


@pytest.mark.parametrize("metric", ["ip", "cos"])
def test_bound_holds_for_every_pair(engine, metric):
    g = torch.Generator().manual_seed(8)
    q, c, _ = _crossing_rows(D=64, n_decoys=300)
    cases = [
        (torch.randn(16, 96, generator=g), torch.randn(700, 96, generator=g)),
        (q, c),
        (torch.randn(5, 32, generator=g) * 1e7, torch.randn(400, 32, generator=g) * 1e-9),
    ]
    for q, c in cases:
        Sm, Em, s32 = _bounds(q, c, engine, metric)
        ref = reference_scores(q, c, metric)
        assert bool(((s32 - Sm).abs() <= Em).all()), "the exact kernel's score left the bound"
        assert bool(((ref - Sm).abs() <= Em).all()), "the fp64 score left the bound"


def test_bound_is_tight_enough(engine):
    # Random data. bf16: the measured residuals are ~0.45 of bf16's unit roundoff 2^-8 each, so E
    # is ~2^-8 |q||x|, below the a-priori (2u + u^2) |q||x| ~ 2^-7. int8: rows rounded to steps of
    # max|x| / 127 leave ~0.0085 |x| at D = 256 (~2^-7 on each side, E ~2^-6 |q||x|). A bound
    # loosened or shrunk 4x fails one of the checks (and a shrunk one fails the exactness tests).
    g = torch.Generator().manual_seed(9)
    q, c = torch.randn(8, 256, generator=g), torch.randn(4000, 256, generator=g)
    _, Em, _ = _bounds(q, c, engine)
    qn, cn = q.double().norm(dim=1), c.double().norm(dim=1)
    rel = Em / (qn[:, None] * cn[None, :])
    lo, hi, kept = (
        (2.0**-8, 2.0**-5, 8 * 250) if _format(engine) == "int8" else (2.0**-9, 2.0**-7, 8 * 60)
    )
    assert float(rel.max()) < hi, float(rel.max())
    assert float(rel.min()) > lo, float(rel.min())
    check(q, c, 10)
    assert S.screen_stats["candidates"] <= kept, S.screen_stats


# ---- the candidate lists' compaction (screen_kernel.h, compact_list) ----

EPILOGUES = ["scalar", *(["avx512"] if "avx512bw" in HARDWARE else [])]


def _compact(u, l, k, t, epilogue):
    """compact_list on copies with the 16 spare slots the lists have: (threshold, u, l, id kept)."""
    n = len(u)
    pad = lambda a, dt: torch.cat([torch.as_tensor(a, dtype=dt), torch.full((16,), -7, dtype=dt)])
    uu, ll, ii = pad(u, torch.float32), pad(l, torch.float32), pad(np.arange(n), torch.int32)
    t2, kept = native().screen_compact(
        uu.data_ptr(), ll.data_ptr(), ii.data_ptr(), n, k, t, epilogue
    )
    return t2, uu[:kept], ll[:kept], ii[:kept]


def test_lists_larger_than_the_kept_per_thread_buffers(monkeypatch):
    # 600 queries (2 blocks of 320) x a candidate limit of the whole shard (14,000 rows): 320 x
    # 14,320 list entries per thread, past the 4 Mi entries each thread keeps between calls, so
    # this call maps its own lists; the next, smaller call reuses the kept ones.
    eng = HARDWARE[0] if HARDWARE else "emulated-int8"
    monkeypatch.setitem(S._SCREEN, "engine", eng)
    monkeypatch.setitem(S._SCREEN, "min_rows", 0)
    monkeypatch.setitem(S._SCREEN, "cand_frac", 1.0)
    monkeypatch.setitem(S._SCREEN, "pack_min_queries", 0)
    monkeypatch.setattr(SC, "_screen_cache", {})
    g = torch.Generator().manual_seed(12)
    c = torch.randn(14000, 24, generator=g)
    check(torch.randn(600, 24, generator=g), c, 5)
    check(torch.randn(40, 24, generator=g), c, 5)
    # Long lists (k = 3,000 of 12,000 rows: 320 x 12,320 entries fit the kept set) write more
    # than the 8 MiB a thread may keep: the kept set is unmapped after the call and mapped again
    # by the next one.
    monkeypatch.setitem(S._SCREEN, "max_k_frac", 1.0)
    c2 = torch.randn(12000, 8, generator=g)
    for _ in range(2):
        check(torch.randn(600, 8, generator=g), c2, 3000)


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_compaction_keeps_the_kth_largest_lower_bound_and_every_reachable_row(epilogue):
    # Sizes around the 16-lane vectors and the quickselect's 64-element cut-off, lower bounds with
    # many exact ties (a pivot equal to many values), all equal, or all below t.
    rng = np.random.default_rng(3)
    for n in [0, 1, 15, 16, 17, 63, 64, 65, 100, 200, 257, 1000, 4000]:
        for values in ("distinct", "ties", "equal"):
            if values == "distinct":
                l = rng.standard_normal(n).astype(np.float32)
            elif values == "ties":
                l = rng.integers(0, 7, n).astype(np.float32)
            else:
                l = np.full(n, 0.5, np.float32)
            # upper bounds equal to the new threshold too (a row with U == t is kept)
            gap = rng.uniform(0, 2, n) if values == "distinct" else rng.integers(0, 2, n)
            u = (l + gap).astype(np.float32)
            for k in sorted({1, 3, max(1, n // 2), max(1, n - 1), max(1, n), n + 1}):
                for t in (-np.inf, float(np.float32(np.median(l))) if n else 0.0, 10.0):
                    t2, uk, lk, ik = _compact(u, l, k, t, epilogue)
                    above = np.sort(l[l >= t])[::-1]
                    want = float(above[k - 1]) if len(above) >= k else t
                    assert t2 == want, (n, values, k, t, t2, want)
                    keep = np.flatnonzero(u >= want)
                    assert ik.tolist() == keep.tolist(), (n, values, k, t)
                    assert uk.numpy().tolist() == u[keep].tolist()
                    assert lk.numpy().tolist() == l[keep].tolist()


@pytest.mark.parametrize("engine", [e for e in HARDWARE if e in ("avx512bw", "avx2")])
def test_vpmaddubsw_pairs_stay_exact_at_the_saturation_limit(engine):
    # VPMADDUBSW saturates a pair sum (x~ + 128) q~ + (x~' + 128) q~' above 32,767. The AVX-512BW
    # and AVX2 engines scale each query so that |q~_2i| + |q~_2i+1| <= 128 (screen.h), at most 255 * 128 =
    # 32,640 per pair. Rows at +-max|x| (stored 255 / 1) against queries with every pair at that
    # limit, in each sign pattern: plain int8 queries (q~ = 127) would saturate the pairs and put
    # S off by ~2^15 steps per pair; here S stays within its bound.
    D = 64
    q = torch.tensor([[1.0, 1.0], [1.0, -1.0], [3.0, 1.0], [-1.0, 3.0], [1.0, 0.0]]).repeat(
        1, D // 2
    )
    signs = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]).repeat(1, D // 2)
    c = torch.cat([signs, -signs, torch.randn(200, D, generator=torch.Generator().manual_seed(13))])
    Sm, Em, s32 = _bounds(q, c, engine)
    ref = reference_scores(q, c, "ip")
    assert bool(((ref - Sm).abs() <= Em).all()), (ref - Sm).abs().max()
    assert bool(((s32 - Sm).abs() <= Em).all())
    # those rows round exactly, so their bound is tiny; one saturated pair would be ~4 off
    assert float(Em[:, :8].max()) < 1e-3


def _format(engine):
    return native().screen_format(engine)


# ---- ISA paths: the rescoring reproduces each ISA's exact kernel ----


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_path(isa):
    order = ["generic", "avx2", "avx512"]
    if order.index(isa) > order.index(native().detected_isa()):
        pytest.skip(f"CPU lacks {isa}")
    code = (
        "import torch, densescale; from densescale._native import native;"
        "from densescale.ops import search as S;"
        "S._SCREEN.update(engine='emulated', min_rows=0, max_k_frac=1.0, cand_frac=1.0,"
        " pack_min_queries=0);"
        "g = torch.Generator().manual_seed(0);"
        "q, c = torch.randn(5, 37, generator=g), torch.randn(900, 37, generator=g);"
        "s, i = densescale.search(q, c, 12, backend='cpp');"
        "assert S.screen_stats['queries'] == 5;"
        "qt = S._check_queries(q);"
        "es, ei, _ = S._search_cpp(qt, S._to_shards(c, 37), 12, False, 2, native().isa());"
        "assert torch.equal(i, ei) and torch.equal(s, es);"
        "print(native().isa(), native().screen_engine())"
    )
    out = run_with_isa(code, isa)
    assert out.returncode == 0, out.stderr
    active, screen = out.stdout.split()
    assert active == isa
    # The AVX-512 engines (AMX first, then AVX512-VNNI, AVX512-BF16) run only on the AVX-512 path;
    # the AVX2 engine is the default where AVX2 is the widest ISA; generic code has no screen.
    assert screen == {"avx512": DEFAULT, "avx2": "avx2", "generic": "none"}[isa]


def test_flat_index_makes_its_copy_for_small_batches(monkeypatch):
    # Default policy, except that the shard is big enough: an index's copy is made even for M = 2.
    monkeypatch.setattr(SC, "_screen_cache", {})
    monkeypatch.setitem(S._SCREEN, "engine", ENGINES[-1])
    monkeypatch.setitem(S._SCREEN, "min_rows", 1000)
    g = torch.Generator().manual_seed(10)
    index = FlatIndex(16)
    index.add(torch.randn(1500, 16, generator=g))
    q = torch.randn(2, 16, generator=g)
    s, i = index.search(q, 5)
    assert S.screen_stats["queries"] == 2
    es, ei = exact_kernel(q, index.shards[0], 5)
    assert torch.equal(i, ei) and torch.equal(s, es)
    densescale.search(q, torch.randn(1500, 16, generator=g), 5, backend="cpp")
    assert S.screen_stats["queries"] == 0  # a plain tensor with 2 queries: no copy made


def test_copies_of_more_shards_than_the_cache_holds_are_made_once(monkeypatch):
    # The cache keeps 4 copies of plain tensors; a FlatIndex's shards and the shards of the call
    # in progress are never dropped for room, so neither a 6-shard index nor a 6-shard list
    # remakes its copies on every search (they did, at ~40 ms a shard here).
    import densescale.index as index_module

    monkeypatch.setattr(SC, "_screen_cache", {})
    monkeypatch.setitem(S._SCREEN, "engine", ENGINES[-1])
    monkeypatch.setitem(S._SCREEN, "min_rows", 500)
    monkeypatch.setitem(S._SCREEN, "pack_min_queries", 0)
    monkeypatch.setattr(index_module, "_COALESCE_ROWS", 600)
    made = []
    make = SC._make_screen_copy
    monkeypatch.setattr(SC, "_make_screen_copy", lambda *a, **kw: made.append(1) or make(*a, **kw))
    g = torch.Generator().manual_seed(13)
    q = torch.randn(3, 16, generator=g)
    index = FlatIndex(16)
    for _ in range(6):
        index.add(torch.randn(700, 16, generator=g))
    assert len(index.shards) == 6
    for _ in range(3):
        s, i = index.search(q, 5)
    assert len(made) == 6 and S.screen_stats["queries"] == 3 * 6
    es, ei = exact_kernel(q, torch.cat(index.shards), 5)
    assert torch.equal(i, ei) and torch.equal(s, es)
    shards = [torch.randn(700, 16, generator=g) for _ in range(6)]
    for _ in range(3):
        densescale.search(q, shards, 5, backend="cpp")
    assert len(made) == 12
    # Another corpus: the list's copies are plain ones again, trimmed to make room for it.
    other = torch.randn(700, 16, generator=g)
    densescale.search(q, other, 5, backend="cpp")
    assert len(made) == 13
    plain = [e for e in SC._screen_cache.values() if not SC._is_long_lived(e[0]())]
    assert len(plain) == S._SCREEN["cache_size"]
    index.search(q, 5)  # the index's copies survived all of that
    assert len(made) == 13


def test_public_default_uses_the_screen_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(SC, "_screen_cache", {})
    c = torch.randn(3000, 16)
    densescale.search(torch.randn(4, 16), c, 5, backend="cpp")
    assert S.screen_stats["queries"] == 0  # below min_rows: the exact kernel


def test_screen_engine_env_pins_an_engine(monkeypatch):
    # DENSESCALE_SCREEN=<engine> pins a hardware engine (how the bench times AVX512-BF16 on an AMX
    # machine); a value this CPU cannot run is refused with the choices, "off" runs the exact kernel.
    monkeypatch.setattr(SC, "_screen_cache", {})
    monkeypatch.setitem(S._SCREEN, "min_rows", 1000)
    g = torch.Generator().manual_seed(11)
    q, c = torch.randn(3, 24, generator=g), torch.randn(2000, 24, generator=g)
    index = FlatIndex(24)
    index.add(c)
    for engine in HARDWARE:
        monkeypatch.setenv("DENSESCALE_SCREEN", engine)
        assert S._screen_engine() == engine
        s, i = index.search(q, 7)
        assert S.screen_stats["queries"] == 3
        es, ei = exact_kernel(q, index.shards[0], 7)
        assert torch.equal(i, ei) and torch.equal(s, es)
    monkeypatch.setenv("DENSESCALE_SCREEN", "off")
    assert S._screen_engine() is None
    assert densescale.search_engine() == "off"
    monkeypatch.delenv("DENSESCALE_SCREEN")
    assert densescale.search_engine() == (DEFAULT if DEFAULT != "none" else "off")
    monkeypatch.setenv("DENSESCALE_SCREEN", "tpu")
    with pytest.raises(ValueError, match="DENSESCALE_SCREEN must be off, auto or an engine"):
        index.search(q, 7)
    with pytest.raises(ValueError, match="got 'tpu'"):
        densescale.search_engine()


@pytest.mark.parametrize("engine", ["emulated-int8", "emulated"])
def test_int8_screens_only_small_k(engine, monkeypatch):
    # int8's wider bound keeps ~8,500 rows per query at k = 1,000 (where it no longer pays off):
    # above int8_max_k the int8 engines hand the shard to the exact kernel, the bf16 ones do not.
    monkeypatch.setattr(SC, "_screen_cache", {})
    monkeypatch.setitem(S._SCREEN, "engine", engine)
    monkeypatch.setitem(S._SCREEN, "min_rows", 0)
    monkeypatch.setitem(S._SCREEN, "pack_min_queries", 0)
    monkeypatch.setitem(S._SCREEN, "int8_max_k", 8)
    g = torch.Generator().manual_seed(12)
    q, c = torch.randn(3, 16, generator=g), torch.randn(600, 16, generator=g)
    for k, screened in ((8, True), (9, engine == "emulated")):
        s, i = densescale.search(q, c, k, backend="cpp")
        assert (S.screen_stats["queries"] == 3) is screened, (k, S.screen_stats)
        es, ei = exact_kernel(q, c, k)
        assert torch.equal(i, ei) and torch.equal(s, es)


def test_copy_formats_and_their_errors():
    # Each engine names the copy it reads; the int8 copy takes 1 byte per element (bf16: 2); a
    # wrong format or an unknown engine is refused by name before any work.
    C = native()
    assert C.screen_format("emulated") == "bf16" and C.screen_format("emulated-int8") == "int8"
    for e in HARDWARE:
        assert C.screen_format(e) == ("int8" if e in ("avx512vnni", "avx512bw", "avx2") else "bf16")
    c = torch.randn(100, 70)
    b16 = SC._make_screen_copy(c, None, False, 1, "bf16")
    i8 = SC._make_screen_copy(c, None, False, 1, "int8")
    assert (b16.Dp, i8.Dp) == (96, 128) and b16.ok and i8.ok
    assert b16.nbytes == 128 * 96 * 2 + 4 * 128 * 4  # Np = 128 rows, bf16, 4 factors per row
    assert i8.nbytes == 128 * 128 * 1 + 4 * 128 * 4  # int8: 1 byte per element (D padded to 64)
    with pytest.raises(ValueError, match="format must be 'bf16' or 'int8', got 'fp8'"):
        C.screen_pack(c.data_ptr(), 100, 70, 70, 0, 0, i8.cpack.data_ptr(),
                      i8.meta.data_ptr(), i8.Np, i8.Dp, 1, "fp8")  # fmt: skip
    with pytest.raises(ValueError, match="engine must be 'amx', 'avx512vnni'"):
        C.screen_format("tpu")


def test_a_pinned_engine_under_an_isa_cap_names_the_cap():
    # DENSESCALE_ISA=avx2 leaves only the AVX2 engine: pinning an AVX-512 one says why.
    if native().detected_isa() != "avx512" or HARDWARE[0] == "avx2":
        pytest.skip("needs an AVX-512 CPU with an AVX-512 screen engine")
    code = "import densescale; print(densescale.search_engine())"
    out = run_with_isa(code, "avx2", DENSESCALE_SCREEN=HARDWARE[0])
    assert out.returncode != 0
    assert "DENSESCALE_ISA caps this process at avx2" in out.stderr, out.stderr[-500:]
    assert run_with_isa(code, "avx2").stdout.split() == ["avx2"]
    assert run_with_isa(code, "generic").stdout.split() == ["off"]
