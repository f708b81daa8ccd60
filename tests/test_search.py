"""densescale.search / score_candidates: every backend and ISA path against an fp64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _search_ref import (
    assert_topk_matches,
    exact_kernel,
    reference_scores,
    reference_topk,
    run_with_isa,
    tolerance,
)

import densescale
from densescale._native import native
from densescale.ops import _search_backends as B
from densescale.ops import search as S

ISAS = [isa for isa in ("generic", "avx2", "avx512")
        if ("generic", "avx2", "avx512").index(isa) <= ("generic", "avx2", "avx512").index(native().detected_isa())]  # fmt: skip


def _has_triton_search() -> bool:
    try:
        S._triton_module()
    except ImportError:
        return False
    return True


# Compiled Triton runs every case; the interpreter (CPU CI) only the small dedicated test below.
BACKENDS = ["cpp", "torch", "faiss"] + (
    ["triton"] if _has_triton_search() and torch.cuda.is_available() else []
)


def run_backend(backend: str, q, corpus, k, *, metric="ip", threads=2, chunk_rows=None):
    """Public API for named backends; "cpp-<isa>" pins the C++ kernel's SIMD path."""
    if backend.startswith("cpp-"):
        return exact_kernel(q, corpus, k, metric, backend[4:], threads)
    return densescale.search(
        q, corpus, k, metric=metric, backend=backend, threads=threads, chunk_rows=chunk_rows
    )


ALL = BACKENDS + [f"cpp-{isa}" for isa in ISAS]


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize(
    "M,N,D,k",
    [
        (1, 3, 8, 1),
        (1, 500, 37, 7),
        (5, 3, 16, 3),
        (7, 700, 37, 100),
        (130, 300, 20, 7),
        (9, 257, 64, 257),
    ],
)
def test_search_matches_fp64_reference(backend, M, N, D, k):
    q, c = torch.randn(M, D), torch.randn(N, D)
    s, i = run_backend(backend, q, c, k)
    assert_topk_matches(s, i, reference_scores(q, c), k, tolerance(D, torch.float32))


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_storage(backend, dtype):
    q, c = torch.randn(6, 40), torch.randn(333, 40).to(dtype)
    s, i = run_backend(backend, q, c, 10)
    # The reference uses the stored (rounded) corpus; the kernels widen it exactly to fp32.
    assert_topk_matches(s, i, reference_scores(q, c.float()), 10, tolerance(40, dtype))


@pytest.mark.parametrize("backend", ALL)
def test_half_queries_are_accepted(backend):
    q, c = torch.randn(3, 24).to(torch.bfloat16), torch.randn(50, 24).half()
    s, i = run_backend(backend, q, c, 5)
    assert_topk_matches(
        s, i, reference_scores(q.float(), c.float()), 5, tolerance(24, torch.float16)
    )


@pytest.mark.parametrize("backend", ALL)
def test_exact_ties_broken_by_smaller_id(backend):
    # Small integer entries: every dot product is an exact integer in fp32, so ties are exact and
    # the order must equal the stable fp64 sort (score desc, then id asc) position by position.
    g = torch.Generator().manual_seed(1)
    q = torch.randint(-2, 3, (11, 32), generator=g).float()
    c = torch.randint(-1, 2, (400, 32), generator=g).float()
    c[200:300] = c[:100]  # exact duplicates far apart in id
    ref = reference_scores(q, c)
    for k in (1, 7, 100, 400):
        s, i = run_backend(backend, q, c, k)
        rs, ri = reference_topk(ref, k)
        torch.testing.assert_close(s.double(), rs, atol=0, rtol=0)
        if backend == "faiss":  # faiss orders ties its own way at the k-th boundary
            assert_topk_matches(s, i, ref, k, 0.0)
        else:
            assert torch.equal(i, ri)


@pytest.mark.parametrize("backend", ALL)
def test_cosine(backend):
    q, c = torch.randn(4, 30) * 5, torch.randn(200, 30) * torch.rand(200, 1) * 10
    c[17] = 0  # a zero vector scores 0
    s, i = run_backend(backend, q, c, 20, metric="cos")
    assert_topk_matches(s, i, reference_scores(q, c, "cos"), 20, 1e-5)
    assert float(s.max()) <= 1.0 + 1e-5


@pytest.mark.parametrize("backend", ALL)
def test_many_shards_and_memmaps(backend, tmp_path):
    D = 24
    sizes = [5, 0, 130, 1, 64, 200, 3]
    pieces = [torch.randn(n, D) for n in sizes]
    shards: list = []
    for s, p in enumerate(pieces):
        if s % 2:  # odd shards live in .npy files, mapped read-only
            np.save(tmp_path / f"s{s}.npy", p.numpy())
            shards.append(np.load(tmp_path / f"s{s}.npy", mmap_mode="r"))
        else:
            shards.append(p)
    q = torch.randn(9, D)
    ref = reference_scores(q, torch.cat(pieces))
    for k in (1, 7, 100, sum(sizes)):
        s, i = run_backend(backend, q, shards, k, chunk_rows=16)
        assert_topk_matches(s, i, ref, k, tolerance(D, torch.float32))


@pytest.mark.skipif(not _has_triton_search(), reason="densescale.ops._search_triton not available")
def test_triton_backend_small():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, c = torch.randn(5, 32, device=device), torch.randn(80, 32)
    c[40:50] = c[:10]
    for k in (1, 7, 80):
        s, i = densescale.search(q, [c[:30], c[30:]], k, backend="triton", chunk_rows=32)
        assert_topk_matches(s, i, reference_scores(q.cpu(), c), k, tolerance(32, torch.float32))


class _TritonStandIn:
    """The documented _search_triton interface, in plain torch: checks the launcher's streaming,
    id offsets, merging and cosine handling without the kernel (which has its own tests)."""

    def __init__(self):
        self.calls = []

    def topk(self, queries, corpus, k, return_nonfinite=False):
        self.calls.append((queries.dtype, corpus.shape[0], k))
        scores = queries.float() @ corpus.float().T
        bad = ~torch.isfinite(scores).all()
        if bool(bad):  # the kernel's flag; its top-k of NaN scores is not looked at
            scores = scores.nan_to_num(0.0)
        s, i = S.topk_exact(scores, k)
        return (s, i, bad) if return_nonfinite else (s, i)

    def score_candidates(self, queries, corpus, ids):
        return S._score_candidates_torch(queries, corpus, ids)


def test_triton_launcher_streams_shards(monkeypatch):
    stand_in = _TritonStandIn()
    for mod in (S, B):  # the public checks and the backend itself
        monkeypatch.setattr(mod, "_triton_module", lambda: stand_in)
        monkeypatch.setattr(mod, "_triton_device_ok", lambda device: True)
    q, c = torch.randn(4, 16), torch.randn(300, 16)
    for metric in ("ip", "cos"):
        s, i = densescale.search(
            q, [c[:100], c[100:]], 50, metric=metric, backend="triton", chunk_rows=64
        )
        assert_topk_matches(s, i, reference_scores(q, c, metric), 50, 1e-5)
    # 100 rows -> chunks of 64 + 36, 200 rows -> 64 + 64 + 64 + 8; k capped by the chunk size.
    assert [call[1:] for call in stand_in.calls[:6]] == [
        (64, 50),
        (36, 36),
        (64, 50),
        (64, 50),
        (64, 50),
        (8, 8),
    ]
    ids = torch.randint(-1, 300, (4, 9))
    out = densescale.score_candidates(q, c, ids, backend="triton")
    torch.testing.assert_close(out.double(), _ref_candidates(q, c, ids), atol=1e-5, rtol=0)


def test_numpy_inputs_and_memmap_fp16(tmp_path):
    c = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float16)
    np.save(tmp_path / "c.npy", c)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    q = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    s, i = densescale.search(q, mm, 9)
    assert_topk_matches(
        s, i, reference_scores(torch.from_numpy(q), torch.from_numpy(c).float()), 9, 1e-4
    )


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpp_thread_counts_agree(threads):
    q, c = torch.randn(3, 48), torch.randn(5000, 48)
    s, i = densescale.search(q, c, 50, backend="cpp", threads=threads)
    s1, _ = densescale.search(q, c, 50, backend="torch")
    assert_topk_matches(s, i, reference_scores(q, c), 50, tolerance(48, torch.float32))
    torch.testing.assert_close(s, s1, atol=1e-4, rtol=0)


def test_auto_is_cpp_on_cpu(monkeypatch):
    called = []
    real = S._search_cpp
    monkeypatch.setattr(S, "_search_cpp", lambda *a, **kw: called.append(1) or real(*a, **kw))
    densescale.search(torch.randn(2, 8), torch.randn(10, 8), 3)
    assert called


def test_isa_env_cap_runs_generic():
    # DENSESCALE_ISA is read once per process, so it is checked in a fresh interpreter.
    code = (
        "import torch, densescale; from densescale._native import native;"
        "q, c = torch.randn(3, 20), torch.randn(100, 20);"
        "s, i = densescale.search(q, c, 5, backend='cpp');"
        "r = torch.topk(q.double() @ c.double().T, 5);"
        "assert torch.equal(i, r.indices), (i, r.indices); print(native().isa())"
    )
    out = run_with_isa(code, "generic")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "generic"


def test_isa_env_cap_refuses_a_misspelt_value():
    # Any other value would leave the process uncapped: the user would time the wrong path.
    out = run_with_isa("import densescale; print(densescale.search_engine())", "avx-2")
    assert out.returncode != 0
    assert (
        "DENSESCALE_ISA must be one of generic, avx2, avx512 (or unset), got 'avx-2'" in out.stderr
    )


def test_isa_env_cap_ignores_case():
    # as DENSESCALE_SCREEN: "AVX2" caps the kernels (C++) and passes the Python check alike
    code = "import densescale; from densescale._native import native; print(native().isa())"
    out = run_with_isa(code, "AVX2")
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split()[-1] == ("avx2" if native().detected_isa() != "generic" else "generic")


# ---- score_candidates ----


def _ref_candidates(q, c, ids):
    ref = reference_scores(q, c)
    out = ref.gather(1, ids.clamp_min(0))
    return out.masked_fill(ids < 0, float("-inf"))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_score_candidates_cpp_every_isa(isa, dtype):
    M, N, D, C = 13, 90, 37, 11
    q, c = torch.randn(M, D), torch.randn(N, D).to(dtype)
    ids = torch.randint(0, N, (M, C))
    ids[2, 3:] = -1
    ids[5, 0] = -1
    out = torch.empty(M, C)
    native().score_candidates(
        q.data_ptr(),
        M,
        D,
        c.data_ptr(),
        N,
        D,
        S._CPP_TYPE[dtype],
        ids.data_ptr(),
        C,
        out.data_ptr(),
        2,
        isa,
    )
    ref = _ref_candidates(q, c.float(), ids)
    torch.testing.assert_close(out.double(), ref, atol=tolerance(D, dtype), rtol=0)


@pytest.mark.parametrize("backend", ["cpp", "torch"] + (["triton"] if _has_triton_search() else []))
def test_score_candidates_public(backend):
    q, c = torch.randn(7, 64), torch.randn(500, 64)
    ids = torch.randint(-1, 500, (7, 257))
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    out = densescale.score_candidates(q.to(device), c, ids, backend=backend).cpu()
    ref = _ref_candidates(q, c, ids)
    assert out.dtype == torch.float32 and out.shape == (7, 257)
    assert bool(torch.isneginf(out[ids < 0]).all())
    torch.testing.assert_close(out.double(), ref, atol=tolerance(64, torch.float32), rtol=0)


def test_score_candidates_numpy_memmap_and_int32(tmp_path):
    c = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", c)
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    q = torch.randn(3, 8)
    ids = torch.tensor([[0, 39, -1], [5, 5, 6], [-1, -1, -1]], dtype=torch.int32)
    out = densescale.score_candidates(q, mm, ids)
    ref = _ref_candidates(q, torch.from_numpy(c), ids.long())
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


# ---- bad input ----


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"k": 11}, ValueError, "k must be in"),
        ({"k": 0}, ValueError, "k must be in"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"corpus": torch.randn(10, 5)}, ValueError, "dim 4"),
        ({"corpus": torch.zeros(0, 4)}, ValueError, "corpus must not be empty"),
        ({"corpus": []}, ValueError, "corpus must not be empty"),
        ({"corpus": [torch.randn(3, 4), torch.randn(3, 5)]}, ValueError, r"corpus\[1\]"),
        (
            {"queries": torch.tensor([[1.0, 0, 0, 0], [float("nan"), 0, 0, 0]])},
            ValueError,
            "queries row 1 holds NaN or Inf",
        ),
        (
            {
                "corpus": torch.randn(10, 4).index_put_(
                    (torch.tensor([3]),), torch.tensor(float("inf"))
                )
            },
            ValueError,
            "corpus row 3 holds NaN or Inf",
        ),
        ({"queries": torch.randn(4)}, ValueError, "queries must have 2 dimensions"),
        ({"queries": torch.zeros(0, 4)}, ValueError, "queries must not be empty"),
        ({"queries": torch.ones(2, 4, dtype=torch.int64)}, TypeError, "queries must be float32"),
        ({"queries": [[1.0, 2.0, 3.0, 4.0]]}, TypeError, "queries must be a torch.Tensor"),
        ({"metric": "l2"}, ValueError, "metric must be one of"),
        ({"backend": "blas"}, ValueError, "backend must be one of"),
        ({"threads": 0}, ValueError, "threads must be"),
        ({"distributed": True}, ValueError, "torch.distributed"),
    ],
)
def test_search_bad_input(kwargs, exc, match):
    args = {"queries": torch.randn(2, 4), "corpus": torch.randn(10, 4), "k": 3}
    args.update(kwargs)
    q, c, k = args.pop("queries"), args.pop("corpus"), args.pop("k")
    with pytest.raises(exc, match=match):
        densescale.search(q, c, k, **args)


@pytest.mark.parametrize(
    "ids,exc,match",
    [
        (torch.tensor([[0, 10]]), ValueError, r"candidate_ids must be in \[0, 10\)"),
        (torch.tensor([[0, -2]]), ValueError, "candidate_ids must be in"),
        (torch.tensor([[0.0, 1.0]]), TypeError, "integer"),
        (torch.tensor([0, 1]), ValueError, "shape"),
        (torch.tensor([[0, 1], [1, 2]]), ValueError, "shape"),
    ],
)
def test_score_candidates_bad_input(ids, exc, match):
    with pytest.raises(exc, match=match):
        densescale.score_candidates(torch.randn(1, 4), torch.randn(10, 4), ids)


def test_score_candidates_bad_backend_and_kernel_range_check():
    with pytest.raises(ValueError, match="backend must be one of"):
        densescale.score_candidates(
            torch.randn(1, 4),
            torch.randn(10, 4),
            torch.zeros(1, 1, dtype=torch.long),
            backend="faiss",
        )
    # The kernel checks ids itself before writing anything (the launcher is not the only caller).
    q, c, ids = torch.randn(1, 4), torch.randn(10, 4), torch.tensor([[1, 99]])
    out = torch.full((1, 2), 7.0)
    with pytest.raises(ValueError, match="candidate_ids must be in"):
        native().score_candidates(
            q.data_ptr(), 1, 4, c.data_ptr(), 10, 4, 0, ids.data_ptr(), 2, out.data_ptr(), 1, ""
        )
    assert bool((out == 7.0).all())


def test_kernel_rejects_bad_arguments():
    q, c = torch.randn(1, 4), torch.randn(10, 4)
    s, i = torch.empty(1, 11), torch.empty(1, 11, dtype=torch.long)
    with pytest.raises(ValueError, match="k must be in"):
        native().search_topk(
            q.data_ptr(), 1, 4, c.data_ptr(), 10, 4, 0, 0, 11, 0, s.data_ptr(), i.data_ptr(), 1, ""
        )
    with pytest.raises(ValueError, match="isa must be one of"):
        native().search_topk(
            q.data_ptr(),
            1,
            4,
            c.data_ptr(),
            10,
            4,
            0,
            0,
            1,
            0,
            s.data_ptr(),
            i.data_ptr(),
            1,
            "sse9",
        )


# ---- NaN / Inf: found from the scores, the exact row named (issue 10, issue 11 item 3) ----

NAN_BACKENDS = ["cpp", "torch", "faiss"] + [f"cpp-{isa}" for isa in ISAS if isa != "generic"]


def _bad_corpus(n=600, d=24, rows=(17, 420), dtype=torch.float32, value=float("nan")):
    c = torch.randn(n, d, generator=torch.Generator().manual_seed(3))
    for r in rows:
        c[r, 5] = value
    return c.to(dtype)


def _search_error(backend, q, corpus, **kw):
    with pytest.raises(ValueError) as info:
        if backend.startswith("cpp-"):  # pin the SIMD path (the public call picks the best)
            qt = S._check_queries(q)
            shards = S._to_shards(corpus, qt.shape[1])
            _, _, bad = S._search_cpp(qt, shards, 5, False, 2, backend[4:])
            assert bad.any()
            S._raise_nonfinite(qt, shards, bad)
        else:
            densescale.search(q, corpus, 5, backend=backend, **kw)
    return str(info.value)


@pytest.mark.parametrize("backend", NAN_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_corpus_row_is_named_exactly(backend, dtype, value):
    q = torch.randn(3, 24)
    kw = {} if backend.startswith("cpp") else {"chunk_rows": 64}  # row 17: inside chunk 0
    msg = _search_error(backend, q, _bad_corpus(dtype=dtype, value=value), **kw)
    assert msg.startswith("corpus row 17 holds NaN or Inf"), msg
    # Only a row in a later chunk (torch / faiss stream 64 rows at a time): still that row.
    msg = _search_error(backend, q, _bad_corpus(rows=(421, 530), dtype=dtype, value=value), **kw)
    assert msg.startswith("corpus row 421 holds NaN or Inf"), msg


@pytest.mark.parametrize("backend", ["cpp", "torch", "faiss"])
def test_nan_in_a_later_shard_names_the_shard_row_and_id(backend):
    c = _bad_corpus(rows=())
    later = _bad_corpus(n=300, rows=(17, 200))
    msg = _search_error(backend, torch.randn(2, 24), [c, np.zeros((0, 24), np.float32), later])
    assert msg.startswith("corpus[2] row 17 (id 617) holds NaN or Inf"), msg


@pytest.mark.parametrize("backend", ["cpp", "torch", "faiss"])
@pytest.mark.parametrize("metric", ["ip", "cos"])
def test_nan_query_row_is_named(backend, metric):
    q = torch.randn(40, 24)
    q[17, 0] = float("nan")
    q[30, 3] = float("inf")
    with pytest.raises(ValueError, match=r"^queries row 17 holds NaN or Inf"):
        densescale.search(q, _bad_corpus(rows=()), 5, backend=backend, metric=metric)


def test_nan_in_memmap_and_flat_index():
    import tempfile

    c = _bad_corpus(rows=(17,))
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.lib.format.open_memmap(f"{tmp}/c.npy", "w+", np.float32, tuple(c.shape))
        mm[:] = c.numpy()
        with pytest.raises(ValueError, match="corpus row 17 holds NaN"):
            densescale.search(torch.randn(2, 24), mm, 3)
        del mm
    with pytest.raises(ValueError, match="vectors row 17 holds NaN"):
        densescale.FlatIndex(24).add(c)
    index = densescale.FlatIndex(24, metric="cos", dtype="float16")
    index.add(_bad_corpus(rows=()))
    q = torch.randn(5, 24)
    q[4, 0] = float("inf")
    with pytest.raises(ValueError, match="queries row 4 holds NaN"):
        index.search(q, 3)


def test_overflow_of_finite_inputs_is_not_blamed_on_a_row():
    c = torch.randn(50, 8)
    c[9] = 1e30
    with pytest.raises(ValueError, match="scores overflow float32.*corpus row 9"):
        densescale.search(torch.full((2, 8), 1e20), c, 3, backend="cpp")


def test_finite_search_reads_no_input_for_checks(monkeypatch):
    """The public call spends no pass over the corpus on NaN checks (issue 10)."""
    c = _bad_corpus(rows=())
    for name in ("isfinite", "aminmax"):
        monkeypatch.setattr(torch, name, lambda *a, **k: pytest.fail("an input was scanned"))
    _, i = densescale.search(torch.randn(3, 24), c, 5, backend="cpp")
    assert i.shape == (3, 5)
    densescale.score_candidates(torch.randn(3, 24), c, torch.randint(0, 600, (3, 9)))


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_nan_candidate_row_is_named(backend):
    c = _bad_corpus(rows=(17, 420))
    ids = torch.randint(0, 600, (6, 20), generator=torch.Generator().manual_seed(0))
    ids[ids == 17] = 0
    # Row 420 is scored; row 17 is never a candidate, so it is not read.
    ids[3, 4], ids[1, 0] = 420, -1
    with pytest.raises(ValueError, match=r"^corpus row 420 holds NaN or Inf"):
        densescale.score_candidates(torch.randn(6, 24), c, ids, backend=backend)
    ids[5, 7] = 17
    with pytest.raises(ValueError, match=r"^corpus row 17 holds NaN or Inf"):
        densescale.score_candidates(torch.randn(6, 24), c, ids, backend=backend)
    q = torch.randn(6, 24)
    q[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^queries row 2 holds NaN or Inf"):
        densescale.score_candidates(q, _bad_corpus(rows=()), ids, backend=backend)
